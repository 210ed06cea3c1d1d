// Prints the CIDv1 (raw leaves, balanced layout) that ipfs-unixfs-importer, the library js-ipfs
// adds files with, gives a file for a chunk size and a link width. js-ipfs's RPC cannot set the
// link width, so the tests ask the library directly.
// Usage: node unixfs_importer.mjs <tests/servers folder> <file> <chunk size> <max links>
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [servers, file, chunkSize, maxLinks] = process.argv.slice(2)
const entry = join(servers, 'node_modules', 'ipfs-unixfs-importer', 'src', 'index.js')
const { importer } = await import(pathToFileURL(entry).href)

let root
for await (const imported of importer([{ content: readFileSync(file) }], {}, {
  onlyHash: true, // nothing is stored, so no blockstore is needed
  cidVersion: 1,
  rawLeaves: true,
  maxChunkSize: Number(chunkSize),
  maxChildrenPerNode: Number(maxLinks)
})) {
  root = imported.cid
}
console.log(root.toString())
