/** What a caller is shown of a drift item holding folders it may not list (pure: report.ts). */
import { addClosed, foldNested, MAX_CLOSED_DIRS, shownCounts, type ClosedDir, type DriftItem } from '../../src/drift/report';

const item = (path: string, files: number, bytes: number, closed?: ClosedDir[]): DriftItem => ({ kind: 'ephemeral', path, files, bytes, detail: '', suggestion: '', ...(closed ? { closed } : {}) });
const dir = (path: string, uid: number, mode: number, files: number, bytes: number, parent = -1): ClosedDir => ({ path, uid, gid: uid, mode, files, bytes, parent });
/** As nobody (uid 65534) would: the owner/group/other rule for read and search. */
const asNobody = (c: ClosedDir) => (c.uid === 65534 ? (c.mode & 0o500) === 0o500 : (c.mode & 0o005) === 0o005);

describe('shownCounts', () => {
  it('leaves out what is right inside a folder the caller may not list, and everything below it', () => {
    // /a: 2 files of its own; /a/s (0700 root): 5, and /a/s/m (0755 inside it): 1; /a/mine (0700 nobody's): 3.
    const i = item('/a', 11, 110, [dir('/a/s', 0, 0o700, 5, 50), dir('/a/s/m', 0, 0o711, 1, 10, 0), dir('/a/mine', 65534, 0o700, 3, 30)]);
    expect(shownCounts(i, asNobody)).toEqual({ files: 5, bytes: 50, cut: true });
    expect(shownCounts(i, () => true)).toEqual({ files: 11, bytes: 110, cut: false });
  });

  it('shows root only what is past the closed folders it keeps', () => {
    const list: ClosedDir[] = [];
    for (let i = 0; i < MAX_CLOSED_DIRS + 5; i++) list[addClosed(list, { path: `/a/${i}`, uid: 65534, gid: 65534, mode: 0o700, parent: -1 })]!.files++;
    expect(list).toHaveLength(MAX_CLOSED_DIRS + 1);
    expect(list[MAX_CLOSED_DIRS]).toMatchObject({ uid: -1, files: 5 });
    expect(shownCounts(item('/a', MAX_CLOSED_DIRS + 5, 0, list), asNobody).files).toBe(MAX_CLOSED_DIRS);
  });

  it('keeps the closed folders of an item folded into another, and never changes the items it was given', () => {
    const inner = item('/a/b', 4, 40, [dir('/a/b/s', 0, 0o700, 4, 40)]);
    const [outer] = foldNested([item('/a', 1, 10), inner]);
    expect(outer).toMatchObject({ path: '/a', files: 5, bytes: 50 });
    expect(shownCounts(outer!, asNobody)).toEqual({ files: 1, bytes: 10, cut: true });
    expect(inner.closed).toHaveLength(1);
  });
});
