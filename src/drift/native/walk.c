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
 * a subdirectory over to the queue only while the queue is short, so the open fds stay bounded
 * by the queue plus one per level of depth per thread.
 * Every non-directory entry (file, symlink, other) whose ctime >= SINCE (or any, for 0) counts
 * towards the directory that holds it. Output, for each directory holding a counted entry:
 *   FILES \t BYTES \t LOGICALPATH \n
 * in no particular order (with one thread, children before their parent), then a last line
 *   total \t SCANNED \t - \n
 * Each directory entered (ROOT included) that not everyone may list (a mode without all of
 * r-x for user, group and other) is also written, as the fstat of the descriptor that is walked
 * found it, before any line for it or below it:
 *   closed \t MODE UID GID \t LOGICALPATH \n      (MODE: st_mode & 07777, in decimal)
 * so that the reader learns which folders are closed without a stat of its own per folder.
 * SCANNED: the non-directory entries looked at, counted or not. \n, \t and \ in paths are
 * written as \n, \t and \\. Lines come out in chunks of whole lines as the walk goes, not all
 * at the end, so that the reader can work on them meanwhile. Entries that vanish or cannot be
 * read are skipped silently; a bad ROOT or SINCE exits 1 with a message on stderr (2 for usage).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
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

static dev_t root_dev;
static bool since_all;
static long long since_sec;
static long since_nsec;

static char **skips; /* sorted, for bsearch */
static size_t n_skips;
static char **globs;
static size_t n_globs;

/* One per thread: the logical path being looked at ("" for ROOT, then "/a", "/a/b"...; grows as
 * needed), the output not yet written, and the entries scanned. */
struct walker {
	char *path;
	size_t path_cap;
	char *out;
	size_t out_len, out_cap;
	unsigned long long scanned;
	char **bufs; /* a getdents64 buffer per level of depth being walked, allocated on first use */
	size_t n_bufs;
};

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
	size_t need = w->out_len + 2 * strlen(p) + strlen(head) + 4;
	if (need > w->out_cap)
		w->out = xrealloc(w->out, w->out_cap = need * 2);
	char *o = w->out + w->out_len;
	o += sprintf(o, "%s\t", head);
	for (; *p; p++) {
		switch (*p) {
		case '\n': *o++ = '\\'; *o++ = 'n'; break;
		case '\t': *o++ = '\\'; *o++ = 't'; break;
		case '\\': *o++ = '\\'; *o++ = '\\'; break;
		default: *o++ = *p;
		}
	}
	*o++ = '\n';
	w->out_len = o - w->out;
	if (w->out_len >= OUT_FLUSH)
		flush_out(w);
}

/* Appends "FILES\tBYTES\tPATH\n", the path escaped. */
static void put_line(struct walker *w, unsigned long long files, long long bytes, const char *p)
{
	char head[48];
	snprintf(head, sizeof head, "%llu\t%lld", files, bytes);
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

static void walk(struct walker *w, int fd, size_t len, size_t depth);

/* The subdirectory open as sub (owned), whose logical path is w->path[0..len): hands it to the
 * shared queue when that is short and other threads may take it, else walks it here. */
static void descend(struct walker *w, int sub, size_t len, size_t depth)
{
	if (n_threads > 1) {
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
				return;
			}
		}
		pthread_mutex_unlock(&q_lock);
	}
	walk(w, sub, len, depth);
}

/* Opens the subdirectory name of fd, without following a symlink, and walks it when it is on
 * ROOT's filesystem. Returns false, with errno, when it cannot be opened. */
static bool enter(struct walker *w, int fd, const char *name, size_t len, size_t depth)
{
	/* Open first, then fstat the fd: what is entered is what was checked. */
	int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return false;
	struct stat st;
	if (fstat(sub, &st) == 0 && st.st_dev == root_dev) {
		put_closed(w, &st, len);
		descend(w, sub, len, depth);
	} else
		close(sub);
	return true;
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

/* Walks the directory open as fd (owned: closed here), whose logical path is w->path[0..len),
 * at depth (0 for what a thread took from the queue). Reads the entries with getdents64 into a
 * buffer of this depth's own, as readdir would, without readdir's fcntl and fstat calls. */
static void walk(struct walker *w, int fd, size_t len, size_t depth)
{
	if (depth >= w->n_bufs) {
		size_t n = depth * 2 + 8;
		w->bufs = xrealloc(w->bufs, n * sizeof *w->bufs);
		memset(w->bufs + w->n_bufs, 0, (n - w->n_bufs) * sizeof *w->bufs);
		w->n_bufs = n;
	}
	if (!w->bufs[depth])
		w->bufs[depth] = xrealloc(NULL, DENTS_BUF);
	char *buf = w->bufs[depth];
	unsigned long long files = 0;
	long long bytes = 0;
	for (;;) {
		long got = syscall(SYS_getdents64, fd, buf, DENTS_BUF);
		if (got <= 0) {
			if (got < 0 && errno == EINTR)
				continue;
			break; /* the end, or cannot be read: what was read counts */
		}
		for (long off = 0; off < got;) {
			struct linux_dirent64 *e = (struct linux_dirent64 *)(buf + off);
			off += e->d_reclen;
			const char *name = e->d_name;
			if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
				continue;
			size_t nlen = strlen(name);
			if (len + nlen + 2 > w->path_cap)
				w->path = xrealloc(w->path, w->path_cap = (len + nlen + 2) * 2);
			char *path = w->path;
			path[len] = '/';
			memcpy(path + len + 1, name, nlen + 1);
			if (skipped(path))
				continue;

			if (e->d_type == DT_DIR) {
				if (enter(w, fd, name, len + 1 + nlen, depth + 1))
					continue;
				if (errno != ENOTDIR && errno != ELOOP)
					continue; /* EACCES, vanished... */
				/* replaced by a non-directory meanwhile: look at it as one */
			}
			struct stat st;
			if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
				continue;
			if (S_ISDIR(st.st_mode)) {
				if (st.st_dev == root_dev)
					enter(w, fd, name, len + 1 + nlen, depth + 1);
				continue;
			}
			w->scanned++;
			if (since_all || st.st_ctim.tv_sec > since_sec ||
			    (st.st_ctim.tv_sec == since_sec && st.st_ctim.tv_nsec >= since_nsec)) {
				files++;
				bytes += st.st_size;
			}
		}
	}
	close(fd);
	if (files) {
		w->path[len] = 0;
		put_line(w, files, bytes, len ? w->path : "/");
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
		walk(w, it.fd, it.len, 0);
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

	/* One fd per level of depth: allow as deep a tree as the hard limit does. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
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
