// BullMQ's side of bench/consumer.py: COUNT no-op jobs added before the clock starts, then one
// Worker with concurrency CONCURRENCY takes them all; each job is acknowledged (moved to
// completed, and removed: removeOnComplete). Prints {"rate": jobs/s, "seconds": …} as JSON.
//
//     NODE_PATH=~/.cache/mpush-bench/node/node_modules node bullmq_worker.js PORT COUNT CONCURRENCY
'use strict';
const { Queue, Worker } = require('bullmq');

const [port, count, concurrency] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port };

async function main() {
  const queue = new Queue('bench', { connection });
  await queue.obliterate({ force: true });
  for (let start = 0; start < count; start += 1000) {
    const jobs = [];
    for (let i = start; i < Math.min(count, start + 1000); i++) {
      jobs.push({ name: 'noop', data: { i }, opts: { removeOnComplete: true } });
    }
    await queue.addBulk(jobs);
  }
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const worker = new Worker('bench', async () => {}, { connection, concurrency, autorun: false });
  worker.on('completed', () => {
    done += 1;
    if (done === count) finish();
  });
  const began = process.hrtime.bigint();
  worker.run();
  await finished;
  const seconds = Number(process.hrtime.bigint() - began) / 1e9;
  console.log(JSON.stringify({ rate: count / seconds, seconds }));
  await worker.close();
  await queue.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
