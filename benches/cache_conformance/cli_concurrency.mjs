// The suite's cli.mjs (all tests, JSON on stdout) with the number of tests run at a time as an
// argument instead of runner.mjs's default of 100. Run from the package's directory:
//   node cli_concurrency.mjs <base-url> <tests at a time>
import path from 'path'
import { pathToFileURL } from 'url'

const [base, chunk] = process.argv.slice(2)
const load = file => import(pathToFileURL(path.resolve(file)).href)
const { runTests, getResults } = await load('client/runner.mjs')
const fetch = (await load('node_modules/node-fetch/lib/index.js')).default
const tests = (await load('tests/index.mjs')).default
tests.push((await load('tests/surrogate-control.mjs')).default)

await runTests(tests, fetch, false, base, Number(chunk))
console.log(JSON.stringify(getResults(), null, 2))
