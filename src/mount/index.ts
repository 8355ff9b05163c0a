/** The mount lifecycle: mount(), unmount, stale mountpoints, miss handlers. */
export { mount, Mount, defaultThreads } from './mount';
export type { MountOptions, MountStats, MountLayer, ReadMiss } from './mount';
export { layoutReadMiss, layoutDirOf } from './layout-source';
export { mountpointState, prepareMountpoint, unmountPath, findMount } from './stale';
export type { MountpointState } from './stale';
export { SingleFlight } from './singleflight';
