/** The mount lifecycle: mount(), unmount, stale mountpoints, miss handlers. */
export { mount, Mount, defaultThreads, storeReadMiss } from './mount';
export type { MountOptions, MountStats, MountLayer, ReadMiss } from './mount';
export { archiveForImage } from './image';
export type { ImageArchive, ImageArchiveOptions } from './image';
export { mountpointState, prepareMountpoint, unmountPath, findMount } from './stale';
export type { MountpointState } from './stale';
export { Singleflight } from '../storage/singleflight';
