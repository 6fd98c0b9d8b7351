"""The Postgres side: tables and migrations, the sink service and writer, queries, exports."""
