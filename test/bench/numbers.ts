/**
 * What lossless numbers cost per message body: `node dist/test/bench/numbers.js [bodies] [rounds]`.
 *
 * Bodies are the bench's ~1 KB `$pageview` tasks as Python's json writes them (one float, `$time`). Measured,
 * rounds alternating, median µs per body: the text scan and the value walk alone, parseKombuJson as it was (the
 * tag test and JSON.parse) and as it is (plus scan and walk); and for the same bodies with six numbers JSON.parse
 * would change (10**30, 2**64+1, -(2**63), 1.0, -0.0, 1e+16) in properties: parseKombuJson (the lossless parser)
 * and stringifyForPython of the parsed kwargs (the strict path), against the plain body's.
 */
import { mayContainTaggedValue, parseKombuJson, stringifyForPython } from '../../protocol/json';
import { holdsUnsafeInteger, needsLosslessParse } from '../../protocol/lossless-numbers';
import { benchProducer, benchTask, captureMessage } from './envelopes';

const BIG =
  '"big_int": 1000000000000000000000000000000, "u64": 18446744073709551617, "i64": -9223372036854775808, "one": 1.0, "negz": -0.0, "e16": 1e+16, ';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function main(): void {
  const n = Number(process.argv[2] ?? 2000);
  const rounds = Number(process.argv[3] ?? 15);
  const producer = benchProducer();
  const plain = Array.from({ length: n }, (_, i) =>
    captureMessage(benchTask(i, 2, 1, Date.now()), producer).body.toString('utf8'),
  );
  const big = plain.map((t) => t.replace('"properties": {', `"properties": {${BIG}`));
  if (big.some((t) => !needsLosslessParse(t)) || plain.some((t) => needsLosslessParse(t)))
    throw new Error('scan is wrong');
  const kwargsOf = (v: unknown): unknown => (v as unknown[])[0];
  const plainValues = plain.map((t) => JSON.parse(t) as unknown);
  const plainParsed = plain.map((t) => kwargsOf(parseKombuJson(t)));
  const bigParsed = big.map((t) => kwargsOf(parseKombuJson(t)));

  let sink = 0;
  const cases: Record<string, () => void> = {
    'text scan (needsLosslessParse)': () => plain.forEach((t) => (sink += needsLosslessParse(t) ? 1 : 0)),
    'value walk (holdsUnsafeInteger)': () => plainValues.forEach((v) => (sink += holdsUnsafeInteger(v) ? 1 : 0)),
    'parseKombuJson before (tag test + parse)': () =>
      plain.forEach((t) => (sink += mayContainTaggedValue(t) ? 0 : (JSON.parse(t) as unknown[]).length)),
    'parseKombuJson now': () => plain.forEach((t) => (sink += (parseKombuJson(t) as unknown[]).length)),
    'parseKombuJson now (6 kept numbers)': () => big.forEach((t) => (sink += (parseKombuJson(t) as unknown[]).length)),
    'stringifyForPython (plain args)': () => plainParsed.forEach((v) => (sink += stringifyForPython(v).length)),
    'stringifyForPython (6 kept numbers)': () => bigParsed.forEach((v) => (sink += stringifyForPython(v).length)),
  };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  for (let r = 0; r < rounds + 2; r++) {
    for (const [name, run] of Object.entries(cases)) {
      const t0 = process.hrtime.bigint();
      run();
      const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
      if (r >= 2) times[name]!.push(us); // two warm-up rounds
    }
  }
  console.log(`${n} bodies of ~${plain[0]!.length} chars, ${rounds} rounds; median µs per body:`);
  for (const [name, xs] of Object.entries(times)) console.log(`  ${name.padEnd(40)} ${median(xs).toFixed(2)}`);
  if (sink < 0) console.log(sink);
}

main();
