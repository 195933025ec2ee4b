type Print = (s: string) => void;

/**
 * status, list, reload, monitor and diff through impermanenced (src/cli/bus-commands.ts): the
 * D-Bus client is loaded on first use, so that the offline commands (check, generate, diff
 * --offline) start without it.
 */
export async function onBus(command: string, opts: { json: boolean; interactive: boolean; bus: string | undefined; since?: string }, out: Print, err: Print): Promise<number> {
  const { onBus: run } = await import('./bus-commands');
  return run(command, opts, out, err);
}
