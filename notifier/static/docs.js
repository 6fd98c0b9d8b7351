// The interactive API docs: Swagger UI on this notifier's own openapi.json. "Try it out" sends
// requests to this origin with the console's session cookie (or a token given to Authorize).
// No validator: Swagger UI would otherwise send the document to validator.swagger.io.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  withCredentials: true,
  supportedSubmitMethods: ["get"],
});
