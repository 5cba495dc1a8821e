// Audit decision lines formatted natively, part of build/libhelm.so (see helm_shim.c for the rest).
#include <errno.h>
#include <string.h>
#include "helm.h"
/*
 * Decision lines, formatted natively: helmd's drain calls this once per batch
 * of ring records, for the byte-for-byte text formatDecision
 * (daemon/audit/record.ts) writes; whatever this does not handle exactly
 * (bytes above 0x7f in a string, IPv6 addresses, exec arguments, an exe the
 * kernel could not resolve, a date past 9999) it hands back to formatDecision.
 * The names (agent, labels, role, policy, rule) come from helmd as text.
 * unit: test/unit/audit.test.ts, against formatDecision on random events.
 */

static const char *const fmt_ops[] = {"read", "write", "exec", "bpf", "signal", "ptrace", "mount", "module", "control", "connect", "bind"};
static const char *const fmt_details[] = {"open", "create", "mkdir", "unlink", "rmdir", "rename-from", "rename-to", "link-from", "link-to", "symlink", "chmod",
					  "chown", "truncate", "mmap-exec", "receive", "xattr", "connect", "sendmsg", "bind", "unix", "raw", "packet"};
static const char *const fmt_decisions[] = {"allow", "deny", "would_deny"};
static const char *const fmt_reasons[] = {"rule", "default", "no-policy", "path-error", "no-table", "inode-rule", "self-protection"};
#define FMT_COUNT(a) ((unsigned)(sizeof(a) / sizeof((a)[0])))

struct fmt_out {
	char *p;
};

static void fmt_str(struct fmt_out *o, const char *s)
{
	size_t n = strlen(s);
	memcpy(o->p, s, n);
	o->p += n;
}

/* A string literal: its length known when compiled (no strlen per field per line). */
#define FMT_LIT(o, lit)                                   \
	do {                                              \
		memcpy((o)->p, (lit), sizeof(lit) - 1);   \
		(o)->p += sizeof(lit) - 1;                \
	} while (0)

/* 1 for the bytes a JSON string holds as they are: 0x20..0x7f but for '"' (0x22) and '\\' (0x5c) (GNU C ranges). */
static const unsigned char fmt_plain[256] = {[0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7f] = 1};

static void fmt_u64(struct fmt_out *o, unsigned long long v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*o->p++ = tmp[--n];
}

static void fmt_digits(struct fmt_out *o, unsigned v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		o->p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	o->p += width;
}

/* A C string field (up to its NUL or `max` bytes) as JSON; 0 if it holds a byte above 0x7f (formatDecision's UTF-8 decoding is left to JS). */
static int fmt_cstr(struct fmt_out *o, const char *s, int max, int strip_slash_dir)
{
	static const char hex[] = "0123456789abcdef";
	const char *end = memchr(s, 0, (size_t)max);
	int n = end ? (int)(end - s) : max;

	if (strip_slash_dir && n > 1 && s[n - 1] == '/')
		n--;
	*o->p++ = '"';
	for (int i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (fmt_plain[c]) {
			/* a run of bytes that need no escape, copied at once */
			int j = i + 1;
			while (j < n && fmt_plain[(unsigned char)s[j]])
				j++;
			memcpy(o->p, s + i, (size_t)(j - i));
			o->p += j - i;
			i = j - 1;
			continue;
		}
		if (c >= 0x80)
			return 0;
		if (c == '"' || c == '\\') {
			*o->p++ = '\\';
			*o->p++ = (char)c;
		} else if (c < 0x20) {
			*o->p++ = '\\';
			switch (c) {
			case '\b': *o->p++ = 'b'; break;
			case '\f': *o->p++ = 'f'; break;
			case '\n': *o->p++ = 'n'; break;
			case '\r': *o->p++ = 'r'; break;
			case '\t': *o->p++ = 't'; break;
			default:
				memcpy(o->p, "u00", 3);
				o->p[3] = hex[c >> 4];
				o->p[4] = hex[c & 15];
				o->p += 5;
			}
		} else
			*o->p++ = (char)c;
	}
	*o->p++ = '"';
	return 1;
}

static void fmt_name(struct fmt_out *o, const char *const *table, unsigned count, unsigned i, const char *prefix)
{
	*o->p++ = '"';
	if (i < count)
		fmt_str(o, table[i]);
	else {
		fmt_str(o, prefix);
		fmt_u64(o, i);
	}
	*o->p++ = '"';
}

static void fmt_proto(struct fmt_out *o, unsigned proto)
{
	const char *name = proto == 1 ? "icmp" : proto == 6 ? "tcp" : proto == 17 ? "udp" : proto == 58 ? "icmpv6" : proto == 132 ? "sctp" : proto == 136 ? "udplite" : NULL;
	*o->p++ = '"';
	if (name)
		fmt_str(o, name);
	else
		fmt_u64(o, proto);
	*o->p++ = '"';
}

/* Days since 1970-01-01 as a civil date (H. Hinnant's days_from_civil, inverted). */
static void civil(long long z, long long *y, unsigned *m, unsigned *d)
{
	z += 719468;
	long long era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (long long)yoe + era * 400 + (*m <= 2);
}

/* One decision line; 1 if written, 0 if formatDecision must write it. */
static int fmt_decision(struct fmt_out *o, const struct helm_event *e, long long off_sec, long long off_ns)
{
	unsigned long long boot = e->ts_boot_ns;
	long long sec = (long long)(boot / 1000000000ull) + off_sec;
	long long ns = (long long)(boot % 1000000000ull) + off_ns;
	long long y, days;
	unsigned mo, d, sod;

	if (e->exe_len <= 0 || e->argc > 0)
		return 0; /* /proc is read for the exe; arguments: formatDecision */
	if (ns >= 1000000000) {
		ns -= 1000000000;
		sec++;
	}
	if (sec < 0)
		return 0;
	days = sec / 86400;
	sod = (unsigned)(sec % 86400);
	civil(days, &y, &mo, &d);
	if (y > 9999)
		return 0;
	FMT_LIT(o, "{\"v\":1,\"ts\":\"");
	fmt_digits(o, (unsigned)y, 4);
	*o->p++ = '-';
	fmt_digits(o, mo, 2);
	*o->p++ = '-';
	fmt_digits(o, d, 2);
	*o->p++ = 'T';
	fmt_digits(o, sod / 3600, 2);
	*o->p++ = ':';
	fmt_digits(o, sod / 60 % 60, 2);
	*o->p++ = ':';
	fmt_digits(o, sod % 60, 2);
	*o->p++ = '.';
	fmt_digits(o, (unsigned)ns, 9);
	FMT_LIT(o, "Z\",\"seq\":");
	return 1;
}

/* The rest of the line, after its seq. */
static int fmt_decision_rest(struct fmt_out *o, const struct helm_event *e, const char *names, int names_len)
{
	int is_net = (e->op == HELM_OP_CONNECT || e->op == HELM_OP_BIND) && e->detail != HELM_DETAIL_UNIX;

	FMT_LIT(o, ",\"type\":\"decision\",\"decision\":\"");
	fmt_str(o, e->decision < FMT_COUNT(fmt_decisions) ? fmt_decisions[e->decision] : "deny");
	FMT_LIT(o, "\",\"op\":");
	fmt_name(o, fmt_ops, FMT_COUNT(fmt_ops), e->op, "op");
	if (e->op < HELM_FILE_OPS || e->op == HELM_OP_CONTROL || e->op == HELM_OP_CONNECT || e->op == HELM_OP_BIND) {
		FMT_LIT(o, ",\"detail\":");
		fmt_name(o, fmt_details, FMT_COUNT(fmt_details), e->detail, "detail");
	} else {
		FMT_LIT(o, ",\"arg\":");
		fmt_u64(o, e->detail);
		if (e->op == HELM_OP_SIGNAL || e->op == HELM_OP_PTRACE) {
			FMT_LIT(o, ",\"target_pid\":");
			fmt_u64(o, e->target_pid);
		}
	}
	FMT_LIT(o, ",\"path\":");
	if (is_net || e->path_len <= 0)
		FMT_LIT(o, "null");
	else if (!fmt_cstr(o, e->path, HELM_PATH_BUF, e->flags & HELM_EVENT_FLAG_DIR))
		return 0;
	if (e->flags & HELM_EVENT_FLAG_DIR)
		FMT_LIT(o, ",\"dir\":true");
	if (is_net) {
		if (e->detail == HELM_DETAIL_RAW) {
			FMT_LIT(o, ",\"proto\":");
			fmt_proto(o, e->proto);
		} else if (e->detail == HELM_DETAIL_PACKET) {
			static const char hex[] = "0123456789abcdef";
			FMT_LIT(o, ",\"ethertype\":\"0x");
			for (int s = 12; s >= 0; s -= 4)
				*o->p++ = hex[(e->port >> s) & 15];
			*o->p++ = '"';
		} else {
			const __u8 *a = e->addr;
			for (int i = 0; i < 10; i++)
				if (a[i])
					return 0; /* IPv6: formatDecision */
			if (a[10] != 0xff || a[11] != 0xff)
				return 0;
			FMT_LIT(o, ",\"addr\":\"");
			for (int i = 12; i < 16; i++) {
				fmt_u64(o, a[i]);
				*o->p++ = i < 15 ? '.' : '"';
			}
			FMT_LIT(o, ",\"port\":");
			fmt_u64(o, e->port);
			FMT_LIT(o, ",\"proto\":");
			fmt_proto(o, e->proto);
		}
	}
	if (e->ops & (e->ops - 1)) {
		int first = 1;
		FMT_LIT(o, ",\"ops\":[");
		for (unsigned i = 0; i < 32; i++) {
			if (!(e->ops & (1u << i)))
				continue;
			if (!first)
				*o->p++ = ',';
			first = 0;
			fmt_name(o, fmt_ops, FMT_COUNT(fmt_ops), i, "op");
		}
		*o->p++ = ']';
	}
	if (e->flags & HELM_EVENT_FLAG_ARGV_TRUNCATED)
		FMT_LIT(o, ",\"argv_truncated\":true");
	FMT_LIT(o, ",\"pid\":");
	fmt_u64(o, e->pid);
	FMT_LIT(o, ",\"tid\":");
	fmt_u64(o, e->tid);
	FMT_LIT(o, ",\"ppid\":");
	fmt_u64(o, e->ppid);
	FMT_LIT(o, ",\"uid\":");
	fmt_u64(o, e->uid);
	FMT_LIT(o, ",\"gid\":");
	fmt_u64(o, e->gid);
	FMT_LIT(o, ",\"exe\":");
	if (!fmt_cstr(o, e->exe, HELM_PATH_BUF, 0))
		return 0;
	FMT_LIT(o, ",\"parent_exe\":");
	if (e->parent_exe_len <= 0)
		FMT_LIT(o, "null");
	else if (!fmt_cstr(o, e->parent_exe, HELM_PATH_BUF, 0))
		return 0;
	FMT_LIT(o, ",\"comm\":");
	if (!fmt_cstr(o, e->comm, sizeof(e->comm), 0))
		return 0;
	FMT_LIT(o, ",\"cgroup\":{\"id\":\"");
	fmt_u64(o, e->cgroup_id);
	FMT_LIT(o, "\",\"path\":");
	memcpy(o->p, names, (size_t)names_len);
	o->p += names_len;
	fmt_str(o, e->mode == HELM_MODE_DRY_RUN ? ",\"mode\":\"dry-run\",\"reason\":\"" : ",\"mode\":\"enforce\",\"reason\":\"");
	fmt_str(o, e->reason < FMT_COUNT(fmt_reasons) ? fmt_reasons[e->reason] : "rule");
	FMT_LIT(o, "\",\"generation\":");
	fmt_u64(o, e->generation);
	if (!is_net) {
		FMT_LIT(o, ",\"inode\":{\"dev\":");
		fmt_u64(o, e->dev);
		FMT_LIT(o, ",\"ino\":\"");
		fmt_u64(o, e->ino);
		FMT_LIT(o, "\"}");
	}
	if (e->flags & HELM_EVENT_FLAG_SAMPLED)
		FMT_LIT(o, ",\"sampled\":true");
	*o->p++ = '}';
	return 1;
}

/*
 * Records `from` on of a drained batch (`recs`: [u32 len][u32 0][record, padded
 * to 8], record `from` at byte `from_off`), each with names[k]: an index into
 * the names table (`names`, with name_at[2i], name_at[2i + 1] the bytes of text
 * i: the line's JSON from the cgroup's path to the rule's value), or -1 (helmd
 * formats it, or it is no decision line). Writes lines into out[out_off..out_cap)
 * and, per record, res[4k..4k+3] = {1 written | 0 helmd's, start, where the seq
 * goes, end}. Stops, before a record, where a line might not fit; returns the
 * records done (from `from`), or -EINVAL.
 */
int helm_format_decisions(const unsigned char *recs, int nbytes, int from, int from_off, const char *names, const int *name_at, const int *name_idx,
			  char *out, int out_off, int out_cap, int *res, long long off_sec, long long off_ns)
{
	int k = from, off = from_off;
	struct fmt_out o;

	if (off_ns < 0 || off_ns >= 1000000000)
		return -EINVAL;
	while (off + 8 <= nbytes) {
		unsigned len;
		const struct helm_event *e;
		int idx = name_idx[k], names_len, start, at;

		memcpy(&len, recs + off, 4);
		e = (const struct helm_event *)(recs + off + 8);
		res[4 * k] = 0;
		if (idx >= 0 && len >= sizeof(*e)) {
			names_len = name_at[2 * idx + 1] - name_at[2 * idx];
			/* the longest line: every string escaped as \u00XX, and the names */
			if ((long long)out_cap - out_off < 6LL * (3 * HELM_PATH_BUF + 16) + 2048 + names_len)
				break;
			o.p = out + out_off;
			start = out_off;
			if (fmt_decision(&o, e, off_sec, off_ns)) {
				at = (int)(o.p - out);
				if (fmt_decision_rest(&o, e, names + name_at[2 * idx], names_len)) {
					res[4 * k] = 1;
					res[4 * k + 1] = start;
					res[4 * k + 2] = at;
					res[4 * k + 3] = (int)(o.p - out);
					out_off = res[4 * k + 3];
				}
			}
		}
		off += 8 + (int)((len + 7) & ~7u);
		k++;
	}
	return k - from;
}

/*
 * The audit writer's side of a run of lines helm_format_decisions wrote: line i
 * (pos[4(first + i)..]: {1, start, where the seq goes, end} in `src`) is copied
 * into out[off..cap) after HELM_PLACE_GAP bytes of room for its chain, with its
 * seq (seq + i, in decimal) put in at its place, and ends[ends_at + i] set to
 * where it ends: the layout helm_chain_lines (helm_shim.c) takes, byte for byte
 * what daemon/audit/writer.ts writes in JS. One call per run rather than two
 * copies and a number per line from JS. Returns where the last line ends, or
 * -EINVAL (a position out of order) or -ENOSPC (out too short: nothing trusted).
 */
#define HELM_PLACE_GAP 76 /* helm_shim.c's HELM_CHAIN_GAP */
int helm_place_lines(const unsigned char *src, const int *pos, int first, int n, unsigned char *out, int off, int cap, long long seq, int *ends,
		     int ends_at)
{
	if (seq < 0 || n < 0 || first < 0 || off < 0)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		const int *p = pos + 4 * (first + i);
		int start = p[1], at = p[2], end = p[3];
		struct fmt_out o;

		if (start < 0 || at < start || end < at)
			return -EINVAL;
		if ((long long)off + HELM_PLACE_GAP + (end - start) + 20 > cap)
			return -ENOSPC;
		o.p = (char *)out + off + HELM_PLACE_GAP;
		memcpy(o.p, src + start, (size_t)(at - start));
		o.p += at - start;
		fmt_u64(&o, (unsigned long long)(seq + i));
		memcpy(o.p, src + at, (size_t)(end - at));
		o.p += end - at;
		off = (int)(o.p - (char *)out);
		ends[ends_at + i] = off;
	}
	return off;
}
