/* sd-client: a daemon that speaks sd_notify through Debian's libsystemd (sd_notify(3),
 * sd_watchdog_enabled(3)), for the sd-notify scenario. Cross-compiled against the
 * library's arm64 build (tests/system/notify/build-client.sh); its declarations are written
 * here, as the library's ABI documents them, so that no -dev package is needed.
 *
 *   sd-client STEP...
 *     ready | stopping | trigger | ping      READY=1, STOPPING=1, WATCHDOG=trigger, WATCHDOG=1
 *     status=TEXT | usec=N | extend=N        STATUS=, WATCHDOG_USEC=, EXTEND_TIMEOUT_USEC=
 *     pings=N                                N pings, one every quarter of WATCHDOG_USEC (the
 *                                            next step comes right after the last)
 *     sleep=MS                               wait
 *     mark=TEXT                              "wk-test: TEXT" in the kernel log (a timestamp)
 *     flood=N                                a child (another pid) sends N datagrams as fast
 *                                            as the socket takes them while this process
 *                                            pings and watches the agent's feeds (the mtime
 *                                            of /run/watchkeeper/fed): the longest gap
 *                                            between two feeds goes to the kernel log
 * After the last step it sleeps until killed. Everything it says goes to the kernel log
 * ("wk-test: ..."), with the guest's own timestamps.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int sd_notify(int unset_environment, const char *state);
int sd_watchdog_enabled(int unset_environment, uint64_t *usec);

static uint64_t watchdog_usec;

static void say(const char *fmt, ...)
{
    char line[512];
    va_list args;
    int n = snprintf(line, sizeof line, "<5>wk-test: ");
    va_start(args, fmt);
    n += vsnprintf(line + n, sizeof line - n, fmt, args);
    va_end(args);
    if (n >= (int)sizeof line)
        n = sizeof line - 1;
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, line, (size_t)n);
        close(fd);
    }
}

static void notify(const char *text)
{
    if (sd_notify(0, text) <= 0)
        say("sd_notify(%s) did not send (pid %d)", text, (int)getpid());
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static long ping_period_ms(void)
{
    return watchdog_usec ? (long)(watchdog_usec / 4000) : 250;
}

/* The stranger: another process, sending N datagrams to the socket as fast as it takes them. */
static void flood_child(long n)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (!path || strlen(path) >= sizeof addr.sun_path)
        _exit(1);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    long sent = 0;
    double start = now();
    while (sent < n && now() - start < 600) {
        if (sendto(fd, "WATCHDOG=1", 10, MSG_DONTWAIT, (struct sockaddr *)&addr, sizeof addr) == 10)
            sent++;
        else if (errno == EAGAIN)
            sleep_ms(0);
    }
    say("flood: %ld datagrams sent in %ld ms", sent, (long)((now() - start) * 1000));
    _exit(sent == n ? 0 : 1);
}

static double fed_time(void)
{
    struct stat st;
    if (stat("/run/watchkeeper/fed", &st) != 0)
        return 0;
    return (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
}

/* Pings on, and watches the feeds, while the child floods. */
static void flood(long n)
{
    pid_t child = fork();
    if (child == 0)
        flood_child(n);
    double last_feed = fed_time(), last_seen = now(), longest = 0, next_ping = now();
    int status = 0;
    while (waitpid(child, &status, WNOHANG) == 0) {
        double t = now(), fed = fed_time();
        if (fed != last_feed) {
            if (t - last_seen > longest)
                longest = t - last_seen;
            last_feed = fed;
            last_seen = t;
        }
        if (t >= next_ping) {
            notify("WATCHDOG=1");
            next_ping = t + ping_period_ms() / 1000.0;
        }
        sleep_ms(1);
    }
    say("flood: longest feed gap %ld ms, stranger exit %d", (long)(longest * 1000),
        WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(int argc, char **argv)
{
    int enabled = sd_watchdog_enabled(0, &watchdog_usec);
    say("sd-client pid %d, sd_watchdog_enabled %d, usec %llu", (int)getpid(), enabled,
        (unsigned long long)watchdog_usec);
    if (enabled <= 0)
        watchdog_usec = 0;
    for (int i = 1; i < argc; i++) {
        const char *step = argv[i], *eq = strchr(step, '=');
        const char *value = eq ? eq + 1 : "";
        char message[256];
        if (!strcmp(step, "ready"))
            notify("READY=1");
        else if (!strcmp(step, "stopping"))
            notify("STOPPING=1");
        else if (!strcmp(step, "trigger"))
            notify("WATCHDOG=trigger");
        else if (!strcmp(step, "ping"))
            notify("WATCHDOG=1");
        else if (!strncmp(step, "status=", 7) || !strncmp(step, "usec=", 5) ||
                 !strncmp(step, "extend=", 7)) {
            const char *name = step[0] == 's' ? "STATUS" : step[0] == 'u' ? "WATCHDOG_USEC" : "EXTEND_TIMEOUT_USEC";
            snprintf(message, sizeof message, "%s=%s", name, value);
            notify(message);
        } else if (!strncmp(step, "pings=", 6)) {
            for (long n = atol(value); n > 0; n--) {
                notify("WATCHDOG=1");
                if (n > 1)
                    sleep_ms(ping_period_ms());
            }
        } else if (!strncmp(step, "sleep=", 6))
            sleep_ms(atol(value));
        else if (!strncmp(step, "mark=", 5))
            say("%s", value);
        else if (!strncmp(step, "flood=", 6))
            flood(atol(value));
        else {
            say("sd-client: unknown step %s", step);
            return 2;
        }
    }
    for (;;)
        pause();
}
