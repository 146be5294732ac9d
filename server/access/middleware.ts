import type { NextFunction, Request, Response } from 'express';
import { locals } from '../http/request';
import { freezeContext } from './context';

/**
 * Builds the request's AccessContext. Until client authentication exists every request is
 * anonymous and gets the default purpose of use.
 */
export function anonymousAccess(req: Request, res: Response, next: NextFunction): void {
  locals(res).ctx = freezeContext({
    requestId: locals(res).requestId,
    clientId: null,
    roles: [],
    scopes: [],
    purposeOfUse: 'TREAT',
    address: req.socket.remoteAddress,
  });
  next();
}
