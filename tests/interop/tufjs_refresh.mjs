// An independent TUF client reads what `osctl release --out DIR` published.
//
//   node tufjs_refresh.mjs <metadata base URL> <trusted root.json> <cache dir> <target> [<target> ...]
//
// Starts from the trusted root (copied into the cache dir unless the cache already holds a
// trusted root: a later run then remembers what an earlier one trusted, as a host does),
// refreshes with tuf-js, and prints one JSON document on stdout:
//   {"targets": {"v1.4": {"length": ..., "hashes": {...}, "custom": {...}} or null}}
// A refusal prints {"error": "<tuf-js error class>", "message": "..."} and exits with 1.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Updater } from 'tuf-js';

const [baseUrl, rootPath, cacheDir, ...names] = process.argv.slice(2);
if (!baseUrl || !rootPath || !cacheDir) {
  console.error('usage: node tufjs_refresh.mjs <metadata base URL> <root.json> <cache dir> [target ...]');
  process.exit(2);
}
mkdirSync(cacheDir, { recursive: true });
if (!existsSync(join(cacheDir, 'root.json'))) {
  copyFileSync(rootPath, join(cacheDir, 'root.json'));
}

try {
  const updater = new Updater({ metadataBaseUrl: baseUrl, metadataDir: cacheDir, targetDir: cacheDir });
  await updater.refresh();
  const targets = {};
  for (const name of names) {
    const info = await updater.getTargetInfo(name);
    targets[name] = info ? { length: info.length, hashes: info.hashes, custom: info.custom } : null;
  }
  console.log(JSON.stringify({ targets }));
} catch (err) {
  console.log(JSON.stringify({ error: err?.constructor?.name ?? 'Error', message: String(err?.message ?? err) }));
  process.exit(1);
}
