import fs from 'node:fs';
import path from 'node:path';

let cached: string | undefined;

/**
 * The repository's `profiles/` folder (schema, StructureDefinitions, SearchParameters), found
 * by walking up from this file, so it works from `server/` sources and compiled `dist/server/` alike.
 */
export function profilesDir(): string {
  if (cached) return cached;
  let dir = __dirname;
  for (;;) {
    const candidate = path.join(dir, 'profiles');
    if (fs.existsSync(path.join(candidate, 'r4', 'fhir.schema.json'))) return (cached = candidate);
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('profiles/ folder not found above ' + __dirname);
    dir = parent;
  }
}
