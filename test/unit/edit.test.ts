/** Editing a config file as text: entries added and removed, every comment and the order kept. */
import { parse } from 'smol-toml';
import { addEntry, removeEntry, type EntryRef } from '../../src/config/edit';

const dir = (path: string, user?: string): EntryRef => ({ storage: '/persistent', user, kind: 'directory', path });
type Tables = { persistence: Record<string, { directories?: unknown[]; files?: unknown[]; users?: Record<string, { directories?: unknown[] }> }> };
const lists = (text: string) => parse(text) as unknown as Tables;

const SHAPES: Array<[string, string]> = [
  ['empty file', ''],
  ['another storage root only', '# mine\n[persistence."/other"]\ndirectories = ["/srv"]\n'],
  ['the table without the list', '[persistence."/persistent"]\nhideMounts = true # keep hidden\n'],
  ['an empty inline list', '[persistence."/persistent"]\ndirectories = []\n'],
  ['an inline list', '[persistence."/persistent"]\ndirectories = ["/var/log", { directory = "/srv/x", mode = "0700" }] # inline\n'],
  ['an inline list with a trailing comma', '[persistence."/persistent"]\ndirectories = ["/var/log",]\n'],
  ['one item a line, comments', '[persistence."/persistent"]\ndirectories = [\n  # logs\n  "/var/log", # the journal\n  "/var/lib/x" # no comma\n]\nfiles = ["/etc/machine-id"]\n\n[drift]\nignore = ["/opt"]\n'],
  ['an empty multi-line list', '[persistence."/persistent"]\ndirectories = [\n]\n'],
  ['the bracket on the last line', '[persistence."/persistent"]\ndirectories = [\n  "/var/log", "/srv"]\n'],
  ['quoted keys and a users table after', '[persistence . "/persistent"]\ndirectories = ["/a"]\n[persistence."/persistent".users.bird]\ndirectories = ["Music"]\n'],
];

describe('addEntry and removeEntry', () => {
  it.each(SHAPES)('add to %s: the list grows by the path, the rest stays byte for byte', (_name, text) => {
    const before = lists(text || '\n');
    const after = addEntry(text, dir('/var/lib/new'));
    const parsed = lists(after);
    const old = (before.persistence?.['/persistent']?.directories ?? []) as unknown[];
    expect(parsed.persistence['/persistent']!.directories).toEqual([...old, '/var/lib/new']);
    for (const comment of text.match(/#[^\n]*/g) ?? []) expect(after).toContain(comment);
    // Taking it out again gives the same data back.
    const removed = removeEntry(after, dir('/var/lib/new'))!;
    expect(removed).toBeDefined();
    expect(lists(removed || '\n')).toEqual(lists(addEntry(text, dir('/x')).replace(/"\/x",?\s*/, '') || '\n'));
  });

  it('adds to a user table, made if need be, and removes an inline table entry by its path', () => {
    const text = '[persistence."/persistent"]\ndirectories = ["/var/log"]\n';
    const withUser = addEntry(text, dir('.config/app', 'bird'));
    expect(lists(withUser).persistence['/persistent']!.users!.bird!.directories).toEqual(['.config/app']);
    expect(withUser.startsWith(text)).toBe(true);
    const inline = '[persistence."/persistent"]\ndirectories = [\n  { directory = "/srv/x", mode = "0700" }, # secret\n  "/var/log",\n]\n';
    const out = removeEntry(inline, dir('/srv/x'))!;
    expect(lists(out).persistence['/persistent']!.directories).toEqual(['/var/log']);
    expect(removeEntry(inline, dir('/nope'))).toBeUndefined();
    expect(removeEntry(inline, { ...dir('/var/log'), kind: 'file' })).toBeUndefined();
  });
});
