// moto's S3 server in a process that goes away with its parent, started by test/support/s3.ts (plain JS, like
// s3rver-process.mjs). A test worker ends without running exit handlers, and `moto_server`, a Python process
// spawned directly, outlived every test run; this one is forked with an IPC channel, whose end it watches.
// Environment: MOTO_PORT. Exits when moto does (127 when `moto_server` is not on PATH).
import { spawn } from 'node:child_process';

const moto = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(process.env.MOTO_PORT)], { stdio: 'ignore' });
moto.once('error', () => process.exit(127));
moto.once('exit', (code) => process.exit(code ?? 1));

const stop = () => moto.kill('SIGKILL'); // everything it holds is in memory: nothing to flush
process.on('SIGTERM', stop);
process.on('disconnect', stop);
