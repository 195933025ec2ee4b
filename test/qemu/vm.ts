import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';

/**
 * One qemu (TCG: KVM does not work on these machines) booting a disk image with a kernel and an
 * initrd given on the command line, its serial console on stdio: the test reads what the kernel,
 * the initrd and systemd print, logs in (autologin on ttyS0) and runs commands.
 */
export interface BootOptions {
  disk: string;
  kernel: string;
  initrd: string;
  /** Added to the kernel command line. */
  append?: string;
  /** How the kernel finds the root (default: the btrfs image's `root=LABEL=impwipe rootflags=subvol=@root`). */
  root?: string;
  /** More raw disk images (vdb, vdc, …). */
  extraDisks?: string[];
  /** Every byte of the console is appended here. */
  log: string;
}

export class Vm {
  readonly proc: ChildProcess;
  private text = '';
  private waiters: Array<() => void> = [];
  readonly exited: Promise<number | null>;

  constructor(opts: BootOptions) {
    const append = `${opts.root ?? 'root=LABEL=impwipe rootflags=subvol=@root'} rw console=ttyS0 modprobe.blacklist=kvm,kvm_intel,kvm_amd rcupdate.rcu_cpu_stall_suppress=1 nosoftlockup systemd.default_device_timeout_sec=900 systemd.default_timeout_start_sec=900 systemd.show_status=false ${opts.append ?? ''}`;
    const drives = [opts.disk, ...(opts.extraDisks ?? [])].flatMap((d) => ['-drive', `file=${d},format=raw,if=virtio`]);
    appendFileSync(opts.log, `\n===== qemu ${append}\n`);
    this.proc = spawn(
      'qemu-system-x86_64',
      ['-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '1024', '-smp', '1', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot', ...drives, '-kernel', opts.kernel, '-initrd', opts.initrd, '-append', append],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const take = (chunk: Buffer) => {
      const s = chunk.toString('utf8');
      this.text += s;
      appendFileSync(opts.log, s);
      for (const w of this.waiters.splice(0)) w();
    };
    this.proc.stdout!.on('data', take);
    this.proc.stderr!.on('data', take);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => {
      for (const w of this.waiters.splice(0)) w();
      resolve(code);
    }));
  }

  /** Everything the console printed so far. */
  get console(): string {
    return this.text;
  }

  /** Waits until the console (from `from` on) matches; returns the match. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.text.slice(from));
      if (m) return m;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`qemu exited before ${re} appeared; console tail:\n${this.text.slice(-3000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${re}; console tail:\n${this.text.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits for the autologin shell and turns echo off. */
  async login(timeoutMs = 600_000): Promise<void> {
    await this.waitFor(/root@wipetest[^\n]*# $/m, timeoutMs);
    await this.run('stty -echo cols 500; export TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER= PS1= PS2=');
  }

  private seq = 0;
  /** Runs a shell command line; returns its exit code and output. */
  async run(cmd: string, timeoutMs = 120_000): Promise<{ code: number; out: string }> {
    const n = ++this.seq;
    const from = this.text.length;
    this.proc.stdin!.write(`${cmd}; echo "@@$?@@${n}@@"\n`);
    const m = await this.waitFor(new RegExp(`@@(\\d+)@@${n}@@`), timeoutMs, from);
    const all = this.text.slice(from);
    const out = all.slice(0, all.indexOf(m[0])).replace(/\r/g, '').replace(/^root@wipetest[^\n#]*# /gm, '');
    return { code: Number(m[1]), out };
  }

  async poweroff(timeoutMs = 300_000): Promise<void> {
    this.proc.stdin!.write('systemctl poweroff\n');
    await Promise.race([this.exited, new Promise((_, reject) => setTimeout(() => reject(new Error('qemu did not exit after poweroff')), timeoutMs))]);
  }

  /** A power cut: SIGKILL, then wait for the process to be gone. */
  async kill(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * Runs a bash script with the image's top level mounted on $M (read-write, or read-only without
 * log replay), in a private mount namespace: nothing stays mounted when it ends.
 */
export function onImage(disk: string, script: string, mode: 'ro' | 'rw' = 'ro'): string {
  const options = mode === 'ro' ? 'loop,ro,rescue=nologreplay' : 'loop';
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', '--', 'bash', '-euo', 'pipefail', '-c', `M=$(mktemp -d /tmp/wipeC-img.XXXXXX); mount -o ${options} "$1" "$M"; trap 'cd /; umount "$M"; rmdir "$M"' EXIT; cd "$M"; ${script}; cd /`, 'bash', disk], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`script on ${disk} failed (${r.status}): ${r.stderr}\n${script}`);
  return r.stdout;
}

/**
 * The VMs of one describe block, booting the image kept in `dir` (disk.img, vmlinuz, initrd.img;
 * the console appended to console.log): `build` (a script and its arguments) makes or refreshes
 * the image before the block's tests, and after each test every VM it started is killed, so that
 * a failed step leaves no qemu running nor the disk in use for the next one.
 */
export function imageVms(dir: string, build: string[], defaults: Partial<BootOptions> = {}): { disk: string; boot: (opts?: Partial<BootOptions>) => Vm } {
  const disk = join(dir, 'disk.img');
  const vms: Vm[] = [];
  beforeAll(() => {
    mkdirSync(dir, { recursive: true });
    const [script, ...args] = build;
    const r = spawnSync(script!, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${basename(script!)} ${args.join(' ')} failed: ${r.stderr}`);
  });
  afterEach(async () => {
    for (const vm of vms.splice(0)) if (vm.proc.exitCode === null && vm.proc.signalCode === null) await vm.kill();
  });
  const boot = (opts: Partial<BootOptions> = {}) => {
    const vm = new Vm({ disk, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), log: join(dir, 'console.log'), ...defaults, ...opts });
    vms.push(vm);
    return vm;
  };
  return { disk, boot };
}
