/**
 * ClipError: the one error class of clip-native. Native code constructs it
 * too (the addon is handed this constructor at load time), so every failure,
 * from a corrupt gzip stream to a bad CLI flag, carries a stable string
 * `code` that callers can switch on, and maps to a stable process exit code.
 */
export type ClipErrorCode =
  | 'ECORRUPT' // data is not what its format says
  | 'ETRUNCATED' // data ends early
  | 'EUNSUPPORTED' // a format or feature we do not handle
  | 'EDIGEST' // bytes do not match their digest
  | 'EINVAL' // a bad argument or option
  | 'EBUSY' // an operation is already in progress
  | 'EIO' // the OS or a peer failed
  | 'ENOENT' // a named file or image does not exist
  | 'EAUTH' // a registry or its token server refused our credentials
  | 'ENOMEM';

export class ClipError extends Error {
  readonly code: ClipErrorCode;

  constructor(code: ClipErrorCode, message: string) {
    super(message);
    this.name = 'ClipError';
    this.code = code;
  }
}

/** Process exit codes, stable across releases; documented in the README. */
export const EXIT_CODES: Record<ClipErrorCode, number> = {
  EINVAL: 2,
  ENOENT: 3,
  ECORRUPT: 4,
  ETRUNCATED: 5,
  EUNSUPPORTED: 6,
  EDIGEST: 7,
  EIO: 8,
  EBUSY: 9,
  ENOMEM: 10,
  EAUTH: 11,
};

export function isClipError(e: unknown): e is ClipError {
  return e instanceof ClipError;
}
