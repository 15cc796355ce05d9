// Summarizes the raw results of the HTTP cache test suite (npm `http-cache-tests`).
//
//   node summarize.mjs <suite-dir> <name> <results.json>   one run: totals, required tests, per section
//   node summarize.mjs <suite-dir> --published [<name>=<results.json> ...]
//                                                           one line per implementation whose results
//                                                           the package ships (cache-tests.fyi), plus
//                                                           the given runs, all scored alike
//
// A test's verdict is the one cache-tests.fyi shows (lib/display.mjs, determineTestResult): a test
// whose dependency did not pass is a dependency failure, a "Setup" error is a setup failure, and a
// test's `kind` says what a failure means: "required" (or no kind) is a conformance failure,
// "optimal" is a missed optimisation, "check" only records a behaviour (yes/no).

import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ...args] = process.argv.slice(2)
if (!suiteDir || args.length === 0) {
  console.error('usage: summarize.mjs <suite-dir> <name> <results.json> | <suite-dir> --published [name=results.json ...]')
  process.exit(2)
}

const load = file => import(pathToFileURL(path.join(suiteDir, file)).href).then(m => m.default)
// The suites in the order the CLI runs them and cache-tests.fyi shows them (cli.mjs, index.html).
const suites = [...await load('tests/index.mjs'), await load('tests/surrogate-control.mjs')]
// Surrogate-Control is not RFC 9111 (it is a CDN's targeted field), so it is counted apart too.
const SURROGATE = 'surrogate-control'

const tests = new Map()
for (const suite of suites) {
  for (const test of suite.tests) {
    // The CLI skips browser-only tests, as every reverse proxy's published run does.
    if (test.browser_only === true) continue
    tests.set(test.id, { ...test, suite })
  }
}

const kindOf = test => test.kind || 'required'

// determineTestResult of lib/display.mjs, without its DOM symbols.
function verdict (id, results) {
  const test = tests.get(id)
  const result = results[id]
  if (result === undefined) return 'untested'
  for (const dep of test.depends_on || []) {
    if (!tests.has(dep) || !['pass', 'yes'].includes(verdict(dep, results))) return 'dependency_fail'
  }
  if (Array.isArray(result) && result[0] === 'Setup') return result[1] === 'retry' ? 'retry' : 'setup_fail'
  const passed = result === true
  switch (kindOf(test)) {
    case 'required': return passed ? 'pass' : 'fail'
    case 'optimal': return passed ? 'pass' : 'optional_fail'
    case 'check': return passed ? 'yes' : 'no'
    default: throw new Error(`unknown test kind ${test.kind} of ${id}`)
  }
}

// Counts for the tests that `keep` selects: every test that ran, and the required ones alone.
function count (results, keep = () => true) {
  const c = { all: 0, allPassed: 0, req: 0, reqPass: 0, reqFail: 0, reqDep: 0, reqSetup: 0, reqUntested: 0 }
  for (const [id, test] of tests) {
    if (!keep(test)) continue
    const v = verdict(id, results)
    if (v !== 'untested') {
      c.all++
      if (v === 'pass' || v === 'yes') c.allPassed++
    }
    if (kindOf(test) !== 'required') continue
    if (v === 'untested') { c.reqUntested++; continue }
    c.req++
    if (v === 'pass') c.reqPass++
    else if (v === 'fail') c.reqFail++
    else if (v === 'dependency_fail') c.reqDep++
    else c.reqSetup++ // setup failures and retries
  }
  return c
}

const pad = (s, n) => String(s).padEnd(n)
const lpad = (s, n) => String(s).padStart(n)

function summarizeOne (name, results) {
  const byVerdict = {}
  for (const id of tests.keys()) {
    const v = verdict(id, results)
    byVerdict[v] = (byVerdict[v] || 0) + 1
  }
  const unknown = Object.keys(results).filter(id => !tests.has(id))
  const total = count(results)
  const rfc = count(results, t => t.suite.id !== SURROGATE)
  console.log(`== ${name}`)
  console.log(`all tests:      ${total.all} run, ${total.allPassed} passed, ${total.all - total.allPassed} not passed ` +
    `(verdicts: ${Object.entries(byVerdict).map(([k, n]) => `${k} ${n}`).join(', ')})`)
  console.log(`required tests: ${total.req} run, ${total.reqPass} passed, ${total.reqFail} failed, ` +
    `${total.reqDep} failed a dependency, ${total.reqSetup} setup failures or retries`)
  console.log(`without Surrogate-Control: all ${rfc.all} run, ${rfc.allPassed} passed; required ${rfc.req} run, ${rfc.reqPass} passed`)
  if (unknown.length) console.log(`results for ${unknown.length} tests this suite version does not have: ${unknown.join(' ')}`)
  console.log('')
  console.log(`${pad('section', 44)} ${lpad('all', 5)} ${lpad('pass', 5)} ${lpad('req', 5)} ${lpad('pass', 5)} ${lpad('fail', 5)} ${lpad('dep', 5)} ${lpad('setup', 5)}`)
  for (const suite of suites) {
    const c = count(results, t => t.suite === suite)
    if (c.all === 0) continue
    console.log(`${pad(suite.name.slice(0, 44), 44)} ${lpad(c.all, 5)} ${lpad(c.allPassed, 5)} ${lpad(c.req, 5)} ` +
      `${lpad(c.reqPass, 5)} ${lpad(c.reqFail, 5)} ${lpad(c.reqDep, 5)} ${lpad(c.reqSetup, 5)}`)
  }
  console.log('')
  const failed = [...tests.keys()].filter(id => kindOf(tests.get(id)) === 'required' && verdict(id, results) !== 'pass' && verdict(id, results) !== 'untested')
  console.log(`required tests not passed (${failed.length}):`)
  for (const id of failed) {
    const r = results[id]
    const why = Array.isArray(r) ? `${r[0]}: ${r[1]}` : ''
    console.log(`  ${verdict(id, results)} ${id}${why ? '  ' + why : ''}`)
  }
}

function summarizeMany (runs) {
  console.log(`${pad('implementation', 40)} ${lpad('req run', 8)} ${lpad('req pass', 9)} ${lpad('all run', 8)} ${lpad('all pass', 9)} ` +
    `${lpad('rfc req', 8)} ${lpad('pass', 5)}`)
  for (const { name, results } of runs) {
    const t = count(results)
    const r = count(results, x => x.suite.id !== SURROGATE)
    console.log(`${pad(name.slice(0, 40), 40)} ${lpad(t.req, 8)} ${lpad(t.reqPass, 9)} ${lpad(t.all, 8)} ${lpad(t.allPassed, 9)} ` +
      `${lpad(r.req, 8)} ${lpad(r.reqPass, 5)}`)
  }
  console.log(`(${[...tests.values()].filter(t => kindOf(t) === 'required').length} required tests in this suite version; ` +
    '"rfc" leaves out the Surrogate-Control section)')
  console.log('')
  // Required tests passed per section, one column per implementation (its name's first word).
  const cols = runs.map(({ name }) => name.split(' ')[0].slice(0, 8))
  console.log(`${pad('required passed per section', 40)} ${lpad('of', 3)} ${cols.map(c => lpad(c, 8)).join(' ')}`)
  for (const suite of suites) {
    const required = suite.tests.filter(t => tests.has(t.id) && kindOf(t) === 'required').length
    if (required === 0) continue
    const passed = runs.map(({ results }) => count(results, t => t.suite === suite))
      .map(c => lpad(c.req === 0 ? '-' : c.reqPass, 8))
    console.log(`${pad(suite.name.slice(0, 40), 40)} ${lpad(required, 3)} ${passed.join(' ')}`)
  }
}

const readJson = file => JSON.parse(fs.readFileSync(file, 'utf8'))

if (args[0] === '--published') {
  const index = await load('results/index.mjs')
  const runs = index
    .filter(item => item.type === 'rev-proxy' || item.type === 'cdn')
    .map(item => ({ name: `${item.name} ${item.version} (published)`, results: readJson(path.join(suiteDir, 'results', item.file)) }))
  for (const arg of args.slice(1)) {
    const at = arg.indexOf('=')
    runs.push({ name: arg.slice(0, at), results: readJson(arg.slice(at + 1)) })
  }
  summarizeMany(runs)
} else {
  summarizeOne(args[0], readJson(args[1]))
}
