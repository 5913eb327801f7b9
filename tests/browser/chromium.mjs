// Debian's chromium, headless, as the browser scripts here start it. Without the
// background-networking flags the sandbox this runs in refuses chromium's connections;
// --no-sandbox because tests run as root. `FLOWSCOPE_CHROMIUM` names another binary.

import {mkdtempSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

export const CHROMIUM = process.env.FLOWSCOPE_CHROMIUM || '/usr/bin/chromium';

export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A persistent context on a fresh profile directory (returned for the caller to remove). */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'flowscope-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: {width: 1400, height: 860},
  });
  return {context, profile};
}
