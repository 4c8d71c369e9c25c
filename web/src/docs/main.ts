// The API reference page (`/api/docs`): Swagger UI over the server's own OpenAPI
// document. A separate entry, so the app's first load never carries it; everything it
// needs is bundled (no other origin is contacted, which the CSP enforces as well).
// "Try it out" runs as the signed-in user: fetch sends the session cookie on the same
// origin, and the browser adds the Origin header the server checks on writes.
import SwaggerUI from "swagger-ui-dist/swagger-ui-es-bundle.js";
import "swagger-ui-dist/swagger-ui.css";
import "./docs.css";

const root = document.getElementById("docs");
if (root) {
  SwaggerUI({
    url: "/api/openapi.json",
    dom_id: "#docs",
    // The default posts the document to validator.swagger.io for a badge.
    validatorUrl: null,
    deepLinking: true,
    displayOperationId: true,
    defaultModelsExpandDepth: 0,
    docExpansion: "list",
    filter: true,
    onComplete: () => root.removeAttribute("aria-busy"),
  });
}
