// Types for the one part of swagger-ui-dist the docs page uses (the package has none).
declare module "swagger-ui-dist/swagger-ui-es-bundle.js" {
  interface SwaggerOptions {
    url: string;
    dom_id: string;
    validatorUrl: string | null;
    deepLinking?: boolean;
    displayOperationId?: boolean;
    defaultModelsExpandDepth?: number;
    docExpansion?: "list" | "full" | "none";
    filter?: boolean;
    tryItOutEnabled?: boolean;
    onComplete?: () => void;
  }
  const SwaggerUI: (options: SwaggerOptions) => unknown;
  export default SwaggerUI;
}
