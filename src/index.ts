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
