import os from 'node:os';

/**
 * How much CPU the machine has had to spare since the last look, in cores (2 cores half idle:
 * 1). Background work that can wait (the audit index) asks this rather than how busy one event
 * loop is: once the audit append has a thread of its own, the main thread waits on it under
 * load, so its loop looks half idle exactly when the machine has nothing to spare.
 */
export class SpareCpu {
  private last = cpuTimes();

  /** Cores idle on average since the previous call (or since construction). */
  sample(): number {
    const now = cpuTimes();
    const total = now.total - this.last.total;
    const idle = now.idle - this.last.idle;
    this.last = now;
    return total > 0 ? (idle / total) * now.cores : now.cores;
  }
}

function cpuTimes(): { idle: number; total: number; cores: number } {
  const cpus = os.cpus();
  let idle = 0;
  let total = 0;
  for (const { times } of cpus) {
    idle += times.idle;
    total += times.user + times.nice + times.sys + times.idle + times.irq;
  }
  return { idle, total, cores: cpus.length };
}
