// Validates an AsyncAPI document with the AsyncAPI initiative's own parser; exits 1 on any
// error. Used by scripts/asyncapi-check.
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';

const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(process.argv[2], 'utf8'));
const severities = ['error', 'warning', 'info', 'hint'];
for (const d of diagnostics) {
  console.log(`${severities[d.severity]} ${d.code}: ${d.message} at ${d.path.join('.')}`);
}
if (!document || diagnostics.some((d) => d.severity === 0)) process.exit(1);
console.log(`asyncapi: valid AsyncAPI ${document.version()} document, ${document.allMessages().length} messages`);
