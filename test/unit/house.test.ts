// The house rules of the product code (everything but tests, benches and
// the SST program): no file over 500 lines, no class over 350, no function
// over 150, so that a newcomer can hold any part in their head. Measured on
// the TypeScript syntax tree, as the compiler reads the files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { ROOT } from '../helpers/procs.js';

const LIMITS = { file: 500, class: 350, function: 150 };

function productFiles(): string[] {
  const tracked = execFileSync('git', ['ls-files', '*.ts'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
  return tracked.filter((f) => !/^(test|bench|infra|dist|node_modules)\//.test(f) && f !== 'sst.config.ts' && !f.endsWith('.d.ts'));
}

interface Oversize {
  where: string;
  kind: keyof typeof LIMITS;
  lines: number;
}

function measure(file: string): Oversize[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const lineOf = (pos: number) => source.getLineAndCharacterOfPosition(pos).line + 1;
  const found: Oversize[] = [];
  const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
  if (lines > LIMITS.file) found.push({ where: file, kind: 'file', lines });
  const visit = (node: ts.Node): void => {
    const span = () => lineOf(node.getEnd()) - lineOf(node.getStart(source)) + 1;
    const name = () => (node as { name?: ts.Node }).name?.getText(source) ?? '(anonymous)';
    if (ts.isClassLike(node) && span() > LIMITS.class) found.push({ where: `${file}:${lineOf(node.getStart(source))} class ${name()}`, kind: 'class', lines: span() });
    if (ts.isFunctionLike(node) && (node as { body?: ts.Node }).body && span() > LIMITS.function) {
      found.push({ where: `${file}:${lineOf(node.getStart(source))} ${name()}`, kind: 'function', lines: span() });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

test(`no product file over ${LIMITS.file} lines, no class over ${LIMITS.class}, no function over ${LIMITS.function}`, () => {
  const files = productFiles();
  assert.ok(files.length > 50, `found only ${files.length} product files: is this a checkout?`);
  const over = files.flatMap(measure);
  assert.deepEqual(over.map((o) => `${o.where}: ${o.lines} lines, over the ${o.kind}'s ${LIMITS[o.kind]}`), []);
});
