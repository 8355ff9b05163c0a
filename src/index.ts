/**
 * clip-native as a library. Everything the CLI does is reachable from here.
 */
export { ClipError, EXIT_CODES, isClipError } from './errors';
export type { ClipErrorCode } from './errors';
export {
  indexLayerFile,
  indexLayerStream,
  LayerReader,
} from './engine/layer';
export type {
  IndexLayerOptions,
  InflateEngine,
  LayerIndex,
  LayerReaderInfo,
  CompressedSpan,
  TarEntry,
  EntryType,
} from './engine/layer';
export { mergeLayers, normalizePath, countLinks } from './index/merge';
export type { MergedNode, MergedTree, MergeLayerInput, MergeStats, NodeType } from './index/merge';
export { writeArchive } from './archive/writer';
export type { ArchiveLayerInput, ArchiveLayoutStats } from './archive/writer';
export { ClipArchive, modeString, ROOT_INO } from './archive/reader';
export type { ArchiveInfo, ArchiveStat, ArchiveDirEntry, ArchiveLayer, ArchiveImageConfig } from './archive/reader';
export { buildArchive, assembleArchive, indexImage } from './index/build';
export type { BuildArchiveOptions, BuiltArchive, IndexImageOptions, IndexImageResult, IndexProgress, IndexedLayerSummary } from './index/build';
export { mount, Mount, storeReadMiss, archiveForImage, mountpointState, prepareMountpoint, unmountPath } from './mount';
export type { MountOptions, MountStats, MountLayer, ReadMiss, MountpointState } from './mount';
export { LayerStore } from './storage/store';
export type { LayerStoreOptions, PrefetchMode, StorageStats } from './storage/store';
export type { TierStats } from './storage/metrics';
export { DiskCache, defaultCacheDir } from './storage/disk-cache';
export type { CacheEntry, CacheListing, VerifyResult } from './storage/disk-cache';
export { extractArchive } from './storage/extract';
export type { ExtractResult } from './storage/extract';
