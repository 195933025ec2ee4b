// The boot time the wipe adds, under qemu (software emulation: TCG, no KVM here), with a root of
// FILES files (default 100,000, in the pristine, so that every root the wipe moves holds them).
// Boots the dracut image of test/qemu/image.sh RUNS times with the wipe and RUNS times with
// impermanence.wipe=0, alternating, and reads kernel timestamps from the serial console:
//   wipe: from the script's WIPE-STEP-START to WIPE-STEP-DONE (the time the wipe itself takes);
//   switch root: kernel start → the real root's systemd starting (the whole initrd).
// Target (issue 10): ≤ 100 ms added at the initrd stage. Emulated figures: a real machine is faster.
//   node bench/wipe.mjs            (root; FILES=, RUNS=, IMPERMANENCE_QEMU_CACHE=)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const repo = join(import.meta.dirname, '..');
const cache = process.env.IMPERMANENCE_QEMU_CACHE ?? '/var/cache/impermanence-qemu';
const files = Number(process.env.FILES ?? 100_000);
const runs = Number(process.env.RUNS ?? 3);
const dir = join(cache, `wipeC-bench-${files}`);

if (!existsSync(join(dir, 'disk.img'))) {
  const r = spawnSync(join(repo, 'test/qemu/image.sh'), ['dracut', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) process.exit(1);
  const fill = `M=$(mktemp -d); mount -o loop "$1" "$M"; cd "$M"
    btrfs property set @pristine ro false
    mkdir -p @pristine/var/lib/bench; cd @pristine/var/lib/bench
    i=0; while [ $i -lt ${Math.ceil(files / 1000)} ]; do mkdir d$i; (cd d$i && seq 1000 | xargs touch); i=$((i+1)); done
    cd "$M"; btrfs property set @pristine ro true
    btrfs -q subvolume delete @root; btrfs -q subvolume snapshot @pristine @root; touch @root/used
    cd /; umount "$M"; rmdir "$M"`;
  const f = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-euc', fill, 'bash', join(dir, 'disk.img')], { stdio: 'inherit' });
  if (f.status !== 0) process.exit(1);
}

function boot(wipe) {
  return new Promise((resolve, reject) => {
    const append = `root=LABEL=impwipe rootflags=subvol=@root rw console=ttyS0 modprobe.blacklist=kvm,kvm_intel,kvm_amd rcupdate.rcu_cpu_stall_suppress=1 nosoftlockup systemd.default_device_timeout_sec=900 systemd.default_timeout_start_sec=900${wipe ? '' : ' impermanence.wipe=0'}`;
    const q = spawn('qemu-system-x86_64', ['-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '1024', '-smp', '1', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
      '-drive', `file=${join(dir, 'disk.img')},format=raw,if=virtio`, '-kernel', join(dir, 'vmlinuz'), '-initrd', join(dir, 'initrd.img'), '-append', append], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    q.once('exit', (code) => { if (!text.includes('running in system mode')) { clearTimeout(timer); reject(new Error(`qemu exited (${code}) before booting`)); } });
    const timer = setTimeout(() => { q.kill('SIGKILL'); reject(new Error('boot timed out')); }, 900_000);
    q.stdout.on('data', (c) => {
      text += c.toString();
      const systemds = [...text.matchAll(/\[\s*([\d.]+)\] systemd\[1\]: systemd \S+ running in system mode/g)];
      if (systemds.length >= 2) {
        clearTimeout(timer);
        q.stdout.removeAllListeners('data');
        const t = (re) => Number(re.exec(text)?.[1] ?? NaN);
        const result = {
          switchRoot: Number(systemds[1][1]),
          wipe: wipe ? t(/\[\s*([\d.]+)\][^\n]*WIPE-STEP-DONE/) - t(/\[\s*([\d.]+)\][^\n]*WIPE-STEP-START/) : NaN,
        };
        // The next boot needs the disk: wait until this qemu is gone.
        q.once('exit', () => resolve(result));
        q.kill('SIGKILL');
      }
    });
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const withWipe = [], without = [];
for (let i = 0; i < runs; i++) {
  for (const wipe of [true, false]) {
    const r = await boot(wipe);
    (wipe ? withWipe : without).push(r);
    console.error(`run ${i + 1} ${wipe ? 'with' : 'without'} the wipe: switch root at ${r.switchRoot.toFixed(2)} s${wipe ? `, wipe ${(r.wipe * 1000).toFixed(0)} ms` : ''}`);
  }
}
const w = median(withWipe.map((r) => r.wipe)) * 1000;
const a = median(withWipe.map((r) => r.switchRoot));
const b = median(without.map((r) => r.switchRoot));
console.log(`wipe (START→DONE, ${files} files in the root, emulated): median ${w.toFixed(0)} ms over ${runs} boots (target ≤ 100 ms)`);
console.log(`kernel start → switch root: with ${a.toFixed(2)} s, without ${b.toFixed(2)} s (medians of ${runs}; difference ${((a - b) * 1000).toFixed(0)} ms, noisy on a shared machine)`);
