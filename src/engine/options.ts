/**
 * Option checking at the library boundary: unknown keys and wrong types are
 * refused with one clear EINVAL sentence before anything reaches native code
 * (better-sqlite3's habit: `Unknown option "spacng"`).
 */
import { ClipError } from '../errors';

type Kind = 'string' | 'number' | 'boolean' | 'engine';

export function checkOptions<T extends object>(what: string, options: T | undefined, schema: Record<string, Kind>): T {
  if (options === undefined) return {} as T;
  if (options === null || typeof options !== 'object') {
    throw new ClipError('EINVAL', `${what}: options must be an object`);
  }
  for (const [key, value] of Object.entries(options)) {
    const kind = schema[key];
    if (!kind) {
      throw new ClipError('EINVAL', `${what}: unknown option "${key}" (known: ${Object.keys(schema).join(', ')})`);
    }
    if (value === undefined) continue;
    if (kind === 'engine') {
      if (value !== 'isal' && value !== 'zlib') {
        throw new ClipError('EINVAL', `${what}: option "${key}" must be "isal" or "zlib"`);
      }
    } else if (kind === 'number') {
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
        throw new ClipError('EINVAL', `${what}: option "${key}" must be a non-negative integer`);
      }
    } else if (typeof value !== kind) {
      throw new ClipError('EINVAL', `${what}: option "${key}" must be a ${kind}`);
    }
  }
  return options;
}

/** Parses sizes like "2MiB", "512k", "4096" into bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$/i.exec(text);
  if (!m) throw new ClipError('EINVAL', `"${text}" is not a size (examples: 4096, 512KiB, 2MiB)`);
  const unit = (m[2] ?? 'b').toLowerCase()[0];
  const scale = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  const n = Number(m[1]) * scale;
  if (!Number.isSafeInteger(n)) throw new ClipError('EINVAL', `"${text}" is too large`);
  return n;
}
