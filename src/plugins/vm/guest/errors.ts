/** The error classes plugins see: RetryError (plugin-scaffold), FetchError (node-fetch), the meta APIs' errors. */
import { ErrorCtor, own } from './primordials';

/** Thrown by exportEvents to have the batch retried later. */
export class RetryError extends ErrorCtor {
  constructor(message?: string) {
    super(message);
    own(this, 'name', 'RetryError', false);
  }
}

/** node-fetch's FetchError: `type` says what failed ('system', 'max-size', 'invalid-json'…). */
export class FetchError extends ErrorCtor {
  constructor(message: string, type: string) {
    super(message);
    own(this, 'name', 'FetchError', false);
    own(this, 'type', type, true);
  }
}

export function fetchFail(message: string, type: string): Error {
  return new FetchError(message, type);
}

/** The Fail of a meta API: an Error named `name` (CacheError…) with a `type`. */
export function apiError(name: string): (message: string, type: string) => Error {
  return function (message, type) {
    const e = new ErrorCtor(message);
    own(e, 'name', name, false);
    own(e, 'type', type, true);
    return e;
  };
}
