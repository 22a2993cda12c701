/*
 * core.c - errors, checked allocation, random numbers, time, file reading.
 *
 * The RNG is xoshiro256** seeded through splitmix64; asp_hash64 is the
 * splitmix64 finaliser, used for counter-based streams (dropout masks,
 * per-tensor initialisation) so results never depend on call order or threads.
 *
 * Allocation-failure injection (docs/hardening.md): compiled only with
 * -DASPEN_FAILALLOC (`make FAILALLOC=1`); normal builds have no counter and no
 * branch. Every allocation through asp_malloc/calloc/realloc/alloc_aligned
 * (asp_array and asp_strdup go through asp_malloc) takes a ticket from one
 * atomic counter; the armed ticket fails as if the system were out of memory.
 */
#include "core.h"

#include <errno.h>
#include <math.h>
#ifdef ASPEN_FAILALLOC
#include <stdatomic.h>
#endif
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

static _Thread_local char asp_errbuf[1024];

const char *aspen_errmsg(void) { return asp_errbuf; }

const char *aspen_status_name(aspen_status st)
{
    static const char *names[] = {"OK",     "EINVAL", "EIO",          "EFORMAT",
                                  "ESHAPE", "ENOMEM", "EUNSUPPORTED", "ENUMERIC"};
    if ((unsigned)st < ASP_ARRAY_LEN(names)) return names[st];
    return "E?";
}

aspen_status asp_err(aspen_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(asp_errbuf, sizeof(asp_errbuf), fmt, ap);
    va_end(ap);
    return st;
}

void asp_assert_fail(const char *file, int line, const char *expr)
{
    fprintf(stderr, "aspen: internal error at %s:%d: assertion '%s' failed\n", file, line, expr);
    abort();
}

bool asp_mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

bool asp_add_ok(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}

#ifdef ASPEN_FAILALLOC
static atomic_long fa_seen;  /* allocations since asp_failalloc_arm */
static atomic_long fa_fail;  /* ticket that fails (0: none) */
static atomic_int fa_sticky; /* 1: every ticket from fa_fail on fails */

void asp_failalloc_arm(long nth, int sticky)
{
    atomic_store(&fa_fail, 0);
    atomic_store(&fa_seen, 0);
    atomic_store(&fa_sticky, sticky);
    atomic_store(&fa_fail, nth);
}

long asp_failalloc_seen(void) { return atomic_load(&fa_seen); }

static bool fa_inject(void)
{
    long fail = atomic_load(&fa_fail);
    if (fail <= 0) return false;
    long t = atomic_fetch_add(&fa_seen, 1) + 1;
    return t == fail || (t > fail && atomic_load(&fa_sticky));
}
#define FA_INJECT(size)                                                            \
    do {                                                                           \
        if (fa_inject()) {                                                         \
            asp_err(ASPEN_ENOMEM, "out of memory allocating %zu bytes (injected)", \
                    (size_t)(size));                                               \
            return NULL;                                                           \
        }                                                                          \
    } while (0)
#else
#define FA_INJECT(size) ((void)0)
#endif

void *asp_malloc(size_t n)
{
    FA_INJECT(n);
    void *p = malloc(n ? n : 1);
    if (!p) asp_err(ASPEN_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *asp_calloc(size_t n, size_t size)
{
    size_t total;
    if (!asp_mul_ok(n, size, &total)) {
        asp_err(ASPEN_ENOMEM, "allocation size overflows (%zu x %zu)", n, size);
        return NULL;
    }
    FA_INJECT(total);
    void *p = calloc(total ? total : 1, 1);
    if (!p) asp_err(ASPEN_ENOMEM, "out of memory allocating %zu bytes", total);
    return p;
}

void *asp_realloc(void *p, size_t n)
{
    FA_INJECT(n);
    void *q = realloc(p, n ? n : 1);
    if (!q) asp_err(ASPEN_ENOMEM, "out of memory allocating %zu bytes", n);
    return q;
}

void *asp_array(size_t n, size_t size)
{
    size_t total;
    if (!asp_mul_ok(n, size, &total)) {
        asp_err(ASPEN_ENOMEM, "allocation size overflows (%zu x %zu)", n, size);
        return NULL;
    }
    return asp_malloc(total);
}

void *asp_alloc_aligned(size_t n)
{
    size_t rounded;
    if (!asp_add_ok(n, 63, &rounded)) {
        asp_err(ASPEN_ENOMEM, "allocation size overflows (%zu bytes)", n);
        return NULL;
    }
    rounded &= ~(size_t)63;
    FA_INJECT(n);
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) asp_err(ASPEN_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void asp_free_aligned(void *p) { free(p); }

char *asp_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = asp_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

uint64_t asp_hash64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t asp_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return asp_hash64(h);
}

void asp_rng_seed(asp_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        seed = asp_hash64(seed);
        r->s[i] = seed;
    }
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t asp_rng_next(asp_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float asp_rng_uniform(asp_rng *r) { return (float)(asp_rng_next(r) >> 40) * (1.0f / 16777216.0f); }

float asp_rng_normal(asp_rng *r)
{
    /* Box-Muller in double, one value per call: simple and reproducible. */
    double u1 = ((double)(asp_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(asp_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t asp_rng_below(asp_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = asp_rng_next(r);
    while (v >= limit);
    return v % n;
}

double asp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t asp_physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0) return 0;
    return (size_t)pages * (size_t)size;
}

int asp_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

aspen_status asp_read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return asp_err(ASPEN_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && !S_ISREG(sb.st_mode)) {
        fclose(f);
        return asp_err(ASPEN_EIO, "%s: not a regular file", path);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = asp_malloc(cap);
    if (!buf) {
        fclose(f);
        return ASPEN_ENOMEM;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = asp_realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return ASPEN_ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return asp_err(ASPEN_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return ASPEN_OK;
}
