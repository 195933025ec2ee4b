/*
 * impermanence-walk: walks ONE filesystem fast and prints per-directory aggregates of what was
 * written since a time, for the drift scan (src/drift/scan.ts) to group.
 *
 *   impermanence-walk ROOT SINCE
 *
 * ROOT: an absolute directory. SINCE: seconds since the epoch, may have a fraction; 0 counts
 * everything. Reads from stdin, until EOF, what to skip, one per line:
 *   /var/log                 a logical path (host path minus ROOT; ROOT itself is "/")
 *   glob PATTERN             an fnmatch(3) pattern (FNM_PATHNAME) over the logical path,
 *                            such as /home/ then a star then /.cache
 * A skipped or matching path (file or directory) is neither counted nor entered.
 *
 * Walks depth-first without following symlinks and never into another filesystem (st_dev
 * differs from ROOT's, like find -xdev). Each directory is opened relative to its parent's fd,
 * with O_NOFOLLOW, never by full path: a symlink swapped in during the walk cannot redirect it.
 * Walks with min(2, usable CPUs) threads, or IMPERMANENCE_WALK_THREADS (1: a single thread).
 * They share a short queue of open directories: a thread walks its subtree depth-first and hands
 * a subdirectory over to the queue only while the queue is short. A thread walks without
 * recursion (a stack of frames on the heap) and reads each directory whole before entering its
 * subdirectories; it keeps a directory's fd only while subdirectories remain to be entered, and
 * at most a budget of them (64, less under a low RLIMIT_NOFILE): past it, a directory is opened
 * again later from a held ancestor, a component at a time with O_NOFOLLOW, and only when its
 * st_dev and st_ino are still those read. So neither the stack nor the fds grow with depth.
 * Every non-directory entry (file, symlink, other) whose ctime >= SINCE (or any, for 0) counts
 * towards the directory that holds it. Output, for each directory holding a counted entry:
 *   FILES \t BYTES \t LOGICALPATH \n       (BYTES: the sum of their st_size, at most LLONG_MAX)
 * in no particular order (with one thread, children before their parent), then a last line
 *   total \t SCANNED \t - \n
 * Each directory entered (ROOT included) that not everyone may list (a mode without all of
 * r-x for user, group and other) is also written, as the fstat of the descriptor that is walked
 * found it, before any line for it or below it:
 *   closed \t MODE UID GID \t LOGICALPATH \n      (MODE: st_mode & 07777, in decimal)
 * so that the reader learns which folders are closed without a stat of its own per folder.
 * SCANNED: the non-directory entries looked at, counted or not. \n, \t and \ in paths are
 * written as \n, \t and \\, the other control bytes (0x01-0x1f, 0x7f) and the bytes that are not
 * valid UTF-8 as \xHH, so that the output is valid UTF-8 and two names never read the same. Lines come out in chunks of whole lines as the walk goes, not all
 * at the end, so that the reader can work on them meanwhile. Entries that vanish or cannot be
 * read (EACCES...) are skipped silently; a bad ROOT or SINCE exits 1 with a message on stderr (2
 * for usage). Running out of fds or memory, or a name too long (EMFILE, ENFILE, ENOMEM,
 * ENAMETOOLONG), would leave part of the tree unseen: the walk then stops with exit 1 and a
 * message on stderr ("... (the walk is incomplete)"), with no total line, which walkNative
 * (src/drift/walker.ts) turns into a failed scan, never a partial count taken as whole.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "line-escape.h"

static dev_t root_dev;
static bool since_all;
static long long since_sec;
static long since_nsec;

static char **skips; /* sorted, for bsearch */
static size_t n_skips;
static char **globs;
static size_t n_globs;

/* One directory being walked: its fd (-1 once closed), the length of its logical path, its
 * st_dev and st_ino (to check it when opened again), the names of its subdirectories (each ended
 * by a NUL) with the offset of the next one to enter, and what it holds that counts. */
struct frame {
	int fd;
	size_t len;
	dev_t dev;
	ino_t ino;
	char *names;
	size_t names_len, names_cap, next;
	unsigned long long files;
	unsigned long long bytes; /* saturates at LLONG_MAX */
};

/* One per thread: the logical path being looked at ("" for ROOT, then "/a", "/a/b"...; grows as
 * needed), the output not yet written, the entries scanned, its stack of frames (kept for reuse)
 * with how many hold an fd, and its getdents64 buffer. */
struct walker {
	char *path;
	size_t path_cap;
	char *out;
	size_t out_len, out_cap;
	unsigned long long scanned;
	struct frame *frames;
	size_t n_frames;
	size_t *held; /* the frames that hold an fd, by index, ascending */
	size_t n_held, held_cap;
	char *buf;
};

/* The fds of frames a thread may hold at once (see walk). */
static size_t fd_budget = 64;

/* The shared queue of directories to walk, each an open fd (owned) and its logical path. */
struct item {
	int fd;
	size_t len;
	char *path;
};
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static struct item *queue; /* oldest (shallowest, likely largest) first */
static size_t q_len, q_max;
static unsigned n_threads = 1, n_idle;
static bool q_done;

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fputs("impermanence-walk: out of memory\n", stderr);
		exit(1);
	}
	return p;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool skipped(const char *p)
{
	if (n_skips && bsearch(&p, skips, n_skips, sizeof *skips, cmp_str))
		return true;
	for (size_t i = 0; i < n_globs; i++)
		if (fnmatch(globs[i], p, FNM_PATHNAME) == 0)
			return true;
	return false;
}

static void read_skips(void)
{
	char *line = NULL;
	size_t cap = 0, skips_cap = 0, globs_cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = 0;
		if (n == 0)
			continue;
		if (strncmp(line, "glob ", 5) == 0) {
			if (n_globs == globs_cap)
				globs = xrealloc(globs, (globs_cap = globs_cap * 2 + 16) * sizeof *globs);
			globs[n_globs++] = strdup(line + 5);
		} else {
			while (n > 1 && line[n - 1] == '/') /* "/var/log/" is "/var/log" */
				line[--n] = 0;
			if (n_skips == skips_cap)
				skips = xrealloc(skips, (skips_cap = skips_cap * 2 + 16) * sizeof *skips);
			skips[n_skips++] = strdup(line);
		}
	}
	free(line);
	if (n_skips)
		qsort(skips, n_skips, sizeof *skips, cmp_str);
}

/* SINCE as whole seconds and nanoseconds, exactly (no floating point). */
static bool parse_since(const char *s)
{
	long long sec = 0;
	long nsec = 0;
	const char *p = s;
	if (!*p)
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (sec > (long long)1e15)
			return false;
		sec = sec * 10 + (*p - '0');
	}
	if (*p == '.') {
		p++;
		long scale = 100000000;
		for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
			nsec += (*p - '0') * scale; /* digits past the ninth add 0 */
	}
	if (*p || p == s)
		return false;
	since_sec = sec;
	since_nsec = nsec;
	since_all = sec == 0 && nsec == 0;
	return true;
}

/* Each thread's lines go out in chunks of about this size as the walk goes, so that the reader
 * can work on them meanwhile; a lock keeps the chunks (whole lines) from interleaving. */
#define OUT_FLUSH (16 * 1024)
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static bool out_failed;
static int out_errno;

static void write_all(const char *p, size_t n)
{
	while (n && !out_failed) {
		ssize_t r = write(STDOUT_FILENO, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			out_failed = true;
			out_errno = errno;
			break;
		}
		p += r;
		n -= (size_t)r;
	}
}

static void flush_out(struct walker *w)
{
	if (w->out_len) {
		pthread_mutex_lock(&out_lock);
		write_all(w->out, w->out_len);
		pthread_mutex_unlock(&out_lock);
		w->out_len = 0;
	}
}

/* Appends "HEAD\tPATH\n", the path escaped. */
static void put_text(struct walker *w, const char *head, const char *p)
{
	size_t need = w->out_len + 4 * strlen(p) + strlen(head) + 4;
	if (need > w->out_cap)
		w->out = xrealloc(w->out, w->out_cap = need * 2);
	char *o = w->out + w->out_len;
	o += sprintf(o, "%s\t", head);
	char buf[5];
	size_t len, step;
	for (const unsigned char *u = (const unsigned char *)p; *u; u += step) {
		const char *e = escape_at(u, buf, &len, &step);
		memcpy(o, e, len);
		o += len;
	}
	*o++ = '\n';
	w->out_len = o - w->out;
	if (w->out_len >= OUT_FLUSH)
		flush_out(w);
}

/* Appends "FILES\tBYTES\tPATH\n", the path escaped. */
static void put_line(struct walker *w, unsigned long long files, unsigned long long bytes, const char *p)
{
	char head[48];
	snprintf(head, sizeof head, "%llu\t%llu", files, bytes);
	put_text(w, head, p);
}

/* Writes the "closed" line of the directory w->path[0..len) ("/" for ROOT) if st says not
 * everyone may list it, and sends it out at once with what this thread holds: its children are
 * walked only after this (here, or by another thread once queued), so their lines come after it. */
static void put_closed(struct walker *w, const struct stat *st, size_t len)
{
	if ((st->st_mode & 0555) == 0555)
		return;
	char head[96];
	snprintf(head, sizeof head, "closed\t%u %u %u", (unsigned)(st->st_mode & 07777), (unsigned)st->st_uid, (unsigned)st->st_gid);
	char saved = w->path[len];
	w->path[len] = 0;
	put_text(w, head, len ? w->path : "/");
	w->path[len] = saved;
	flush_out(w);
}

/* Hands the subdirectory open as sub (owned), whose logical path is w->path[0..len), to the
 * shared queue when that is short and other threads may take it. */
static bool handed_over(struct walker *w, int sub, size_t len)
{
	if (n_threads < 2)
		return false;
	pthread_mutex_lock(&q_lock);
	if (q_len < q_max) {
		char *p = malloc(len + 1);
		if (p) {
			memcpy(p, w->path, len);
			p[len] = 0;
			queue[q_len++] = (struct item){ sub, len, p };
			if (n_idle)
				pthread_cond_signal(&q_cond);
			pthread_mutex_unlock(&q_lock);
			return true;
		}
	}
	pthread_mutex_unlock(&q_lock);
	return false;
}

/* getdents64(2), which glibc 2.36 does not wrap. */
struct linux_dirent64 {
	ino64_t d_ino;
	off64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};
#define DENTS_BUF (64 * 1024)

/* Out of descriptors or memory, or a path too long: what is below could not be looked at, so the
 * walk says so and exits 1 (the reader then fails the scan) rather than report a partial count. */
static void fail(struct walker *w, size_t len, const char *what, int err)
{
	pthread_mutex_lock(&out_lock);
	w->path[len] = 0;
	fprintf(stderr, "impermanence-walk: %s %s: %s (the walk is incomplete)\n", what, len ? w->path : "/", strerror(err));
	_exit(1);
}

static bool fatal_errno(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENAMETOOLONG;
}

/* Opens the subdirectory name of fd without following a symlink: an fd on ROOT's filesystem, or
 * -1 when it is not one (another filesystem: closed here) or cannot be opened (errno set). */
static int open_sub(struct walker *w, int fd, const char *name, size_t len, struct stat *st)
{
	/* Open first, then fstat the fd: what is entered is what was checked. */
	int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0) {
		if (fatal_errno(errno))
			fail(w, len, "cannot open", errno);
		return -1;
	}
	if (fstat(sub, st) != 0 || st->st_dev != root_dev) {
		close(sub);
		errno = EXDEV;
		return -1;
	}
	return sub;
}

/* Counts the non-directory entry st of the frame's directory. */
static void count_entry(struct walker *w, struct frame *f, const struct stat *st)
{
	w->scanned++;
	if (since_all || st->st_ctim.tv_sec > since_sec ||
	    (st->st_ctim.tv_sec == since_sec && st->st_ctim.tv_nsec >= since_nsec)) {
		f->files++;
		/* Sparse files may claim near LLONG_MAX each: saturate rather than overflow. */
		unsigned long long size = st->st_size > 0 ? (unsigned long long)st->st_size : 0;
		f->bytes = size > (unsigned long long)LLONG_MAX - f->bytes ? (unsigned long long)LLONG_MAX : f->bytes + size;
	}
}

/* Reads the whole directory of the top frame (open as f->fd, logical path w->path[0..f->len)):
 * counts its non-directory entries and keeps the names of its subdirectories, to be entered
 * after, one by one. One getdents64 buffer per thread, as readdir would without its fcntl and
 * fstat calls. */
static void read_dir(struct walker *w, struct frame *f)
{
	size_t len = f->len;
	f->names_len = f->next = 0;
	f->files = 0;
	f->bytes = 0;
	if (!w->buf)
		w->buf = xrealloc(NULL, DENTS_BUF);
	for (;;) {
		long got = syscall(SYS_getdents64, f->fd, w->buf, DENTS_BUF);
		if (got <= 0) {
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0 && fatal_errno(errno))
				fail(w, len, "cannot read", errno);
			break; /* the end, or cannot be read: what was read counts */
		}
		for (long off = 0; off < got;) {
			struct linux_dirent64 *e = (struct linux_dirent64 *)(w->buf + off);
			off += e->d_reclen;
			const char *name = e->d_name;
			if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
				continue;
			size_t nlen = strlen(name);
			if (len + nlen + 2 > w->path_cap)
				w->path = xrealloc(w->path, w->path_cap = (len + nlen + 2) * 2);
			w->path[len] = '/';
			memcpy(w->path + len + 1, name, nlen + 1);
			if (skipped(w->path))
				continue;
			if (e->d_type != DT_DIR) {
				struct stat st;
				if (fstatat(f->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
					if (fatal_errno(errno))
						fail(w, len + 1 + nlen, "cannot stat", errno);
					continue; /* vanished meanwhile */
				}
				if (!S_ISDIR(st.st_mode)) {
					count_entry(w, f, &st);
					continue;
				}
				if (st.st_dev != root_dev)
					continue;
			}
			if (f->names_len + nlen + 1 > f->names_cap)
				f->names = xrealloc(f->names, f->names_cap = (f->names_len + nlen + 1) * 2);
			memcpy(f->names + f->names_len, name, nlen + 1);
			f->names_len += nlen + 1;
		}
	}
}

/* Frame i (above all that hold an fd: the top one) now holds one. */
static void hold(struct walker *w, size_t i)
{
	if (w->n_held == w->held_cap)
		w->held = xrealloc(w->held, (w->held_cap = w->held_cap * 2 + 16) * sizeof *w->held);
	w->held[w->n_held++] = i;
}

/* Closes the fd of frame i. */
static void release(struct walker *w, size_t i)
{
	close(w->frames[i].fd);
	w->frames[i].fd = -1;
	size_t j = w->n_held;
	while (j && w->held[j - 1] != i)
		j--;
	if (j) {
		memmove(w->held + j - 1, w->held + j, (w->n_held - j) * sizeof *w->held);
		w->n_held--;
	}
}

/* Past the budget, closes the fd of one frame, neither the first (the thread's root) nor the top
 * one: the one whose closing leaves the smallest gap between the frames still held around it, so
 * that they stay spread over the depth and a frame is opened again in a few steps (closing the one
 * nearest the top made a deep tree with siblings at each level quadratic: 32 s at 5,000 levels). */
static void thin_out(struct walker *w)
{
	size_t best = 0, best_gap = (size_t)-1;
	for (size_t j = 1; j + 1 < w->n_held; j++) {
		size_t gap = w->held[j + 1] - w->held[j - 1];
		if (gap <= best_gap) {
			best_gap = gap;
			best = j;
		}
	}
	if (best)
		release(w, w->held[best]);
}

/* Opens again the directory of frame i, whose fd was closed to stay within the budget: from the
 * nearest frame below that holds one, a component at a time with O_NOFOLLOW (as the walk itself
 * opens, so a symlink swapped in meanwhile is refused), and only when it is still the directory
 * that was read (same st_dev and st_ino). False when it is gone or was replaced. */
static bool reopen(struct walker *w, size_t i)
{
	struct frame *f = &w->frames[i];
	size_t a = i;
	while (w->frames[--a].fd < 0)
		; /* frame 0 always holds its fd */
	int cur = w->frames[a].fd;
	size_t pos = w->frames[a].len + 1;
	while (pos <= f->len) {
		size_t end = pos;
		while (end < f->len && w->path[end] != '/')
			end++;
		char saved = w->path[end];
		w->path[end] = 0;
		int next = openat(cur, w->path + pos, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int err = errno;
		w->path[end] = saved;
		if (cur != w->frames[a].fd)
			close(cur);
		if (next < 0) {
			if (fatal_errno(err))
				fail(w, f->len, "cannot open again", err);
			return false;
		}
		cur = next;
		pos = end + 1;
	}
	struct stat st;
	if (fstat(cur, &st) != 0 || st.st_dev != f->dev || st.st_ino != f->ino) {
		close(cur);
		return false;
	}
	f->fd = cur;
	hold(w, i);
	return true;
}

/* Walks the directory open as fd (owned: closed here), whose logical path is w->path[0..len),
 * without recursion: a stack of frames on the heap, one per level of depth, each the names of the
 * subdirectories still to enter. A directory is read whole before its subdirectories are entered,
 * and its fd is kept only while some remain to be entered, at most fd_budget of them per thread
 * (past it, one is closed, see thin_out, and opened again when needed, see reopen): a deep tree
 * costs heap, neither stack nor descriptors. */
static void walk(struct walker *w, int fd, size_t len)
{
	struct stat st;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return;
	}
	size_t top = 0; /* frames in use */
	for (;;) {
		/* Push the directory open as fd at w->path[0..len). */
		if (top == w->n_frames) {
			size_t n = w->n_frames * 2 + 16;
			w->frames = xrealloc(w->frames, n * sizeof *w->frames);
			memset(w->frames + w->n_frames, 0, (n - w->n_frames) * sizeof *w->frames);
			w->n_frames = n;
		}
		struct frame *f = &w->frames[top++];
		f->fd = fd;
		f->len = len;
		f->dev = st.st_dev;
		f->ino = st.st_ino;
		hold(w, top - 1);
		read_dir(w, f);
		if (!f->names_len && top > 1) /* nothing to enter: the fd is no longer needed */
			release(w, top - 1);
		if (w->n_held > fd_budget)
			thin_out(w);

		/* The next subdirectory to enter, popping the frames that have none left. */
		fd = -1;
		while (top) {
			f = &w->frames[top - 1];
			if (f->next >= f->names_len) {
				if (f->fd >= 0)
					release(w, top - 1);
				if (f->files) {
					w->path[f->len] = 0;
					put_line(w, f->files, f->bytes, f->len ? w->path : "/");
				}
				top--;
				continue;
			}
			const char *name = f->names + f->next;
			size_t nlen = strlen(name);
			f->next += nlen + 1;
			len = f->len + 1 + nlen;
			if (len + 1 > w->path_cap)
				w->path = xrealloc(w->path, w->path_cap = (len + 1) * 2);
			w->path[f->len] = '/';
			memcpy(w->path + f->len + 1, name, nlen + 1);
			if (f->fd < 0 && !reopen(w, top - 1)) {
				f->next = f->names_len; /* gone or replaced meanwhile: as if it had vanished */
				continue;
			}
			fd = open_sub(w, f->fd, name, len, &st);
			if (fd < 0 && (errno == ENOTDIR || errno == ELOOP)) {
				/* replaced by a non-directory meanwhile: look at it as one */
				struct stat fst;
				if (fstatat(f->fd, name, &fst, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(fst.st_mode))
					count_entry(w, f, &fst);
			}
			if (f->next >= f->names_len && top > 1) /* its last: the fd is no longer needed */
				release(w, top - 1);
			if (fd < 0)
				continue; /* EACCES, vanished, another filesystem... */
			put_closed(w, &st, len);
			if (handed_over(w, fd, len)) {
				fd = -1;
				continue;
			}
			break;
		}
		if (fd < 0)
			return;
	}
}

/* Takes directories from the queue until it is empty and every thread is idle. */
static void *worker(void *arg)
{
	struct walker *w = arg;
	for (;;) {
		pthread_mutex_lock(&q_lock);
		while (!q_len && !q_done) {
			if (n_idle + 1 == n_threads) { /* nothing queued, nobody else walking: done */
				q_done = true;
				pthread_cond_broadcast(&q_cond);
				break;
			}
			n_idle++;
			pthread_cond_wait(&q_cond, &q_lock);
			n_idle--;
		}
		if (!q_len) {
			pthread_mutex_unlock(&q_lock);
			break;
		}
		struct item it = queue[0];
		memmove(queue, queue + 1, --q_len * sizeof *queue);
		pthread_mutex_unlock(&q_lock);

		if (it.len + 2 > w->path_cap)
			w->path = xrealloc(w->path, w->path_cap = (it.len + 2) * 2);
		memcpy(w->path, it.path, it.len + 1);
		free(it.path);
		walk(w, it.fd, it.len);
	}
	flush_out(w);
	return NULL;
}

/* IMPERMANENCE_WALK_THREADS when a number from 1, else min(2, CPUs this process may run on). */
static unsigned threads_wanted(void)
{
	const char *env = getenv("IMPERMANENCE_WALK_THREADS");
	if (env && *env) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(env, &end, 10);
		if (!*end && !errno && n >= 1 && env[0] != '-')
			return n > 64 ? 64 : (unsigned)n;
	}
	cpu_set_t set;
	long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
	return cpus >= 2 ? 2 : 1;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fputs("usage: impermanence-walk ROOT SINCE  (skips on stdin: a logical path, or \"glob PATTERN\", a line each)\n", stderr);
		return 2;
	}
	const char *root = argv[1];
	if (root[0] != '/') {
		fprintf(stderr, "impermanence-walk: ROOT must be an absolute path: %s\n", root);
		return 1;
	}
	if (!parse_since(argv[2])) {
		fprintf(stderr, "impermanence-walk: SINCE must be seconds since the epoch: %s\n", argv[2]);
		return 1;
	}
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		fprintf(stderr, "impermanence-walk: %s: %s\n", root, strerror(errno));
		return 1;
	}
	root_dev = st.st_dev;

	/* Raise the soft limit of fds to the hard one; the budget below fits in it. */
	struct rlimit rl;
	bool have_rl = getrlimit(RLIMIT_NOFILE, &rl) == 0;
	if (have_rl && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			have_rl = getrlimit(RLIMIT_NOFILE, &rl) == 0;
	}

	read_skips();

	unsigned want = threads_wanted();
	struct walker *ws = calloc(want, sizeof *ws);
	pthread_t *tids = calloc(want, sizeof *tids);
	if (!ws || !tids) {
		fputs("impermanence-walk: out of memory\n", stderr);
		return 1;
	}
	for (unsigned i = 0; i < want; i++) {
		ws[i].path_cap = 4096;
		ws[i].path = xrealloc(NULL, ws[i].path_cap);
		ws[i].path[0] = 0;
	}
	q_max = want > 1 ? 4 * want : 1;
	/* Each thread holds at most fd_budget + 1 frames' fds and 2 more while it opens one; the queue
	 * q_max; stdin, stdout, stderr and a few spare. Under a low limit the budget shrinks (the walk
	 * opens directories again more often); past it, EMFILE fails the walk loudly. */
	if (have_rl && rl.rlim_cur != RLIM_INFINITY) {
		long long room = ((long long)rl.rlim_cur - 8 - (long long)q_max) / want - 3;
		fd_budget = room < 2 ? 2 : room > 64 ? 64 : (size_t)room;
	}
	queue = xrealloc(NULL, q_max * sizeof *queue);

	if (skipped("/")) {
		close(fd);
		want = 1; /* nothing to walk */
	} else {
		char *p = strdup("");
		if (!p) {
			fputs("impermanence-walk: out of memory\n", stderr);
			return 1;
		}
		put_closed(&ws[0], &st, 0);
		queue[q_len++] = (struct item){ fd, 0, p };
	}
	/* The workers wait on the lock until n_threads says how many did start. */
	pthread_mutex_lock(&q_lock);
	unsigned started = 1; /* this thread is ws[0] */
	for (unsigned i = 1; i < want; i++) {
		if (pthread_create(&tids[started], NULL, worker, &ws[started]) != 0)
			break; /* fewer threads, same walk */
		started++;
	}
	n_threads = started;
	pthread_mutex_unlock(&q_lock);
	worker(&ws[0]);
	unsigned long long scanned = ws[0].scanned;
	for (unsigned i = 1; i < started; i++) {
		pthread_join(tids[i], NULL);
		scanned += ws[i].scanned;
	}

	char total[64];
	int n = snprintf(total, sizeof total, "total\t%llu\t-\n", scanned);
	write_all(total, (size_t)n);
	if (out_failed) {
		fprintf(stderr, "impermanence-walk: writing to stdout: %s\n", strerror(out_errno));
		return 1;
	}
	return 0;
}
