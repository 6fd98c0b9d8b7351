"""The notifier: operator tokens, the alert hub, the WebSocket and HTTP server, the console."""
