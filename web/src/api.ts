// The API client: generated from proto/ (src/gen), over grpc-web to the
// server that served this page. The token rides in an interceptor.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { FactCheckService } from "./gen/factcheck/v1/factcheck_pb.js";

export type Api = Client<typeof FactCheckService>;

const TOKEN_KEY = "factcheck.token";

/** The token of this tab: sessionStorage, never a URL or localStorage. */
export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string | null): void {
  if (token === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

export function connect(token: string, baseUrl = location.origin): Api {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcWebTransport({ baseUrl, interceptors: [auth] });
  return createClient(FactCheckService, transport);
}

/** A sentence for a person, from whatever was thrown. */
export function describe(e: unknown): string {
  if (e instanceof ConnectError) return `${Code[e.code]}: ${e.rawMessage}`;
  return e instanceof Error ? e.message : String(e);
}

export function isCode(e: unknown, code: Code): e is ConnectError {
  return e instanceof ConnectError && e.code === code;
}

export { Code };
