// Plain-JS entry so the worker can load the TypeScript sources through tsx, however the parent was started.
import { register } from 'tsx/esm/api';
register();
await import('./worker.ts');
