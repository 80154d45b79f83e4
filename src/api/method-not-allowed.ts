/**
 * RFC 9110 §15.5.6: a method a resource does not answer is 405 with the methods it does answer in `Allow`; 404 is
 * for a path that names no resource at all.
 */
import type { Hono } from 'hono';
import { ApiError } from './errors.js';

export function methodNotAllowed(method: string, resource: string, allow: string): ApiError {
  return new ApiError('METHOD_NOT_ALLOWED', `${method} is not a method of ${resource}`, { Allow: allow });
}

/**
 * Gives every path `routes` serves a 405 for the methods it has no route for, its `Allow` taken from the routes
 * themselves (GET brings HEAD, which Hono answers with it). Call it once the routes are registered: the 405 is
 * reached only when none of them matched. Plain `all` routes keep the app on Hono's RegExpRouter.
 */
export function refuseOtherMethods(routes: Hono): Hono {
  const methods = new Map<string, Set<string>>();
  for (const { path, method } of routes.routes) {
    if (method === 'ALL') continue;
    const allowed = methods.get(path) ?? new Set();
    allowed.add(method);
    if (method === 'GET') allowed.add('HEAD');
    methods.set(path, allowed);
  }
  for (const [path, allowed] of methods) {
    const allow = [...allowed].join(', ');
    routes.all(path, async (c, next) => {
      // A method it allows reaches here when its handler passed the request on (the board's static files, for one
      // not there): that is the 404's to answer, not a 405 listing the very method.
      if (allowed.has(c.req.method)) return next();
      throw methodNotAllowed(c.req.method, c.req.routePath, allow);
    });
  }
  return routes;
}
