/**
 * Platforms (`os/arch[/variant]`, as in image indexes and `--platform`
 * flags): parsing, this host's default, and the rule that picks a manifest
 * out of a multi-platform image index.
 *
 * Names are normalised the way the OCI image spec and containerd spell them
 * (x86_64 → amd64, aarch64 → arm64, armhf → arm/v7, i386 → 386). Variants
 * are compared after filling in the implied ones: arm64 without a variant is
 * v8, arm without a variant is v7. A wanted platform with no variant matches
 * any variant (the index's order breaks ties).
 */
import { ClipError } from '../errors';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  x64: { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  i386: { architecture: '386' },
  i486: { architecture: '386' },
  i586: { architecture: '386' },
  i686: { architecture: '386' },
  ia32: { architecture: '386' },
};

/** Node's `process.arch` names mapped to OCI's. */
const NODE_ARCH: Record<string, { architecture: string; variant?: string }> = {
  x64: { architecture: 'amd64' },
  arm64: { architecture: 'arm64', variant: 'v8' },
  arm: { architecture: 'arm', variant: 'v7' },
  ia32: { architecture: '386' },
  ppc64: { architecture: 'ppc64le' }, // Node on Linux/ppc64 is little-endian.
  s390x: { architecture: 's390x' },
  riscv64: { architecture: 'riscv64' },
  loong64: { architecture: 'loong64' },
  mips: { architecture: 'mips' },
  mipsel: { architecture: 'mipsle' },
};

const NAME = /^[a-z0-9_.-]+$/;

/**
 * Parses `os/arch[/variant]` (e.g. `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`),
 * normalising aliases. Errors: EINVAL naming the bad part.
 */
export function parsePlatform(text: string): Platform {
  const parts = typeof text === 'string' ? text.trim().toLowerCase().split('/') : [];
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !NAME.test(p))) {
    throw new ClipError('EINVAL', `"${String(text)}" is not a platform (want os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8)`);
  }
  const platform: Platform = { os: parts[0], architecture: parts[1] };
  if (parts[2] !== undefined) platform.variant = parts[2];
  return normalizePlatform(platform);
}

/** Lowercases, maps architecture aliases, and keeps an explicit variant over an implied one. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() || undefined;
  const alias = ARCH_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    variant = variant ?? alias.variant;
  }
  if (architecture === 'arm64' && variant === '8') variant = 'v8';
  if (architecture === 'arm' && variant !== undefined && /^[5-8]$/.test(variant)) variant = `v${variant}`;
  const out: Platform = { os, architecture };
  if (variant !== undefined) out.variant = variant;
  return out;
}

/** The platform of this process: linux (or process.platform) and process.arch in OCI's names. */
export function hostPlatform(): Platform {
  const mapped = NODE_ARCH[process.arch] ?? { architecture: process.arch };
  const out: Platform = { os: process.platform === 'win32' ? 'windows' : process.platform, architecture: mapped.architecture };
  if (mapped.variant !== undefined) out.variant = mapped.variant;
  return out;
}

/** `os/arch[/variant]`. */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** The variant a platform implies when it names none (arm64 → v8, arm → v7). */
function impliedVariant(p: Platform): string | undefined {
  if (p.variant) return p.variant;
  if (p.architecture === 'arm64') return 'v8';
  if (p.architecture === 'arm') return 'v7';
  return undefined;
}

/**
 * True when an image built for `have` is what someone asking for `want`
 * should get: same os and architecture; if `want` names a variant, the same
 * variant once implied variants are filled in (so linux/arm64/v8 matches an
 * index entry `linux/arm64` with no variant, and the other way round).
 */
export function platformMatches(want: Platform, have: Platform): boolean {
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  if (w.variant === undefined) return true;
  return impliedVariant(w) === impliedVariant(h);
}
