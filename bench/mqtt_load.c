/* mqtt_load.c - the closed-loop MQTT load of `make bench-broker`
 * (bench/run_bench_broker.sh), over libmosquitto.
 *
 *   mqtt_load HOST PORT SECONDS PUBLISHERS SUBSCRIBERS WINDOW PREFIX
 *
 * SUBSCRIBERS clients subscribe to PREFIX/# at QoS 1; PUBLISHERS clients
 * publish 64-byte QoS 1 messages to PREFIX/<n>, each keeping at most
 * WINDOW messages that not every subscriber has received yet. After
 * SECONDS the publishers stop and the load waits (up to 10 s) for what is
 * in flight. A message carries its publisher, number and send time; the
 * latency is send -> receipt, per receipt.
 * Prints one JSON object: sent, received (receipts), delivered_per_s
 * (receipts per second over SECONDS), p50_ms, p99_ms, lost (receipts that
 * never came). Client ids: PREFIX-pub-<n>, PREFIX-sub-<n>; MQTT_USER and
 * MQTT_PASS in the environment: the login; MQTT_SUB_PORT: the subscribers
 * connect there instead (another node of a cluster, on HOST). */
#define _GNU_SOURCE
#include <mosquitto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RING 4096
#define MAX_SAMPLES (16u << 20)

typedef struct pub {
    struct mosquitto *m;
    int idx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inflight;
    uint32_t next;
    atomic_uint got[RING];     /* receipts per message slot */
    atomic_long sent;
} pub_t;

static int npub, nsub, window;
static pub_t *pubs;
static char prefix[64];
static atomic_int subscribed, connected;
static atomic_int stop;
static atomic_long received, in_window;
static double *samples;
static atomic_uint nsamples;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    (void)obj;
    if (rc == 0)
        atomic_fetch_add(&connected, 1);
    else
        fprintf(stderr, "mqtt_load: connect refused: %s\n", mosquitto_connack_string(rc));
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *qos)
{
    (void)m;
    (void)obj;
    (void)mid;
    (void)n;
    (void)qos;
    atomic_fetch_add(&subscribed, 1);
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    uint32_t p, seq;
    uint64_t t;
    pub_t *pb;
    unsigned n, s;

    (void)m;
    (void)obj;
    if (msg->payloadlen != 64)
        return;
    memcpy(&p, msg->payload, 4);
    memcpy(&seq, (char *)msg->payload + 4, 4);
    memcpy(&t, (char *)msg->payload + 8, 8);
    if (p >= (uint32_t)npub)
        return;
    pb = &pubs[p];
    atomic_fetch_add(&received, 1);
    if (!atomic_load(&stop))
        atomic_fetch_add(&in_window, 1);
    s = atomic_fetch_add(&nsamples, 1);
    if (s < MAX_SAMPLES)
        samples[s] = (double)(now_ns() - t) / 1e6;
    n = atomic_fetch_add(&pb->got[seq % RING], 1) + 1;
    if (n == (unsigned)nsub) {
        atomic_store(&pb->got[seq % RING], 0);
        pthread_mutex_lock(&pb->lock);
        pb->inflight--;
        pthread_cond_signal(&pb->cond);
        pthread_mutex_unlock(&pb->lock);
    }
}

static struct mosquitto *client(const char *id, int sub)
{
    struct mosquitto *m = mosquitto_new(id, true, NULL);
    if (!m) {
        perror("mosquitto_new");
        exit(1);
    }
    mosquitto_connect_callback_set(m, on_connect);
    if (sub) {
        mosquitto_subscribe_callback_set(m, on_subscribe);
        mosquitto_message_callback_set(m, on_message);
    }
    mosquitto_max_inflight_messages_set(m, 0);
    if (getenv("MQTT_USER"))
        mosquitto_username_pw_set(m, getenv("MQTT_USER"), getenv("MQTT_PASS"));
    return m;
}

static void *publisher(void *arg)
{
    pub_t *pb = arg;
    char topic[96], payload[64];

    snprintf(topic, sizeof topic, "%s/%d", prefix, pb->idx);
    memset(payload, 'x', sizeof payload);
    while (!atomic_load(&stop)) {
        uint64_t t;
        uint32_t p = (uint32_t)pb->idx, seq;

        pthread_mutex_lock(&pb->lock);
        while (pb->inflight >= window && !atomic_load(&stop)) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += 100000000;
            if (dl.tv_nsec >= 1000000000) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&pb->cond, &pb->lock, &dl);
        }
        if (atomic_load(&stop)) {
            pthread_mutex_unlock(&pb->lock);
            break;
        }
        pb->inflight++;
        seq = pb->next++;
        pthread_mutex_unlock(&pb->lock);
        t = now_ns();
        memcpy(payload, &p, 4);
        memcpy(payload + 4, &seq, 4);
        memcpy(payload + 8, &t, 8);
        if (mosquitto_publish(pb->m, NULL, topic, sizeof payload, payload, 1, false) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "mqtt_load: publish failed\n");
            break;
        }
        atomic_fetch_add(&pb->sent, 1);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *host;
    int port, sub_port, secs, i;
    struct mosquitto **subs;
    char id[128], filter[96];
    double t0, t1, deadline;
    long sent = 0, want;
    unsigned ns;

    if (argc != 8) {
        fprintf(stderr, "usage: mqtt_load HOST PORT SECONDS PUBLISHERS SUBSCRIBERS WINDOW PREFIX\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    sub_port = getenv("MQTT_SUB_PORT") ? atoi(getenv("MQTT_SUB_PORT")) : port;
    secs = atoi(argv[3]);
    npub = atoi(argv[4]);
    nsub = atoi(argv[5]);
    window = atoi(argv[6]);
    snprintf(prefix, sizeof prefix, "%s", argv[7]);
    samples = malloc(sizeof *samples * MAX_SAMPLES);
    pubs = calloc((size_t)npub, sizeof *pubs);
    subs = calloc((size_t)nsub, sizeof *subs);
    if (!samples || !pubs || !subs)
        return 1;
    mosquitto_lib_init();
    snprintf(filter, sizeof filter, "%s/#", prefix);
    for (i = 0; i < nsub; i++) {
        snprintf(id, sizeof id, "%s-sub-%d", prefix, i);
        subs[i] = client(id, 1);
        if (mosquitto_connect(subs[i], host, sub_port, 60) != MOSQ_ERR_SUCCESS ||
            mosquitto_loop_start(subs[i]) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "mqtt_load: cannot connect to %s:%d\n", host, sub_port);
            return 1;
        }
    }
    for (deadline = now_s() + 10; atomic_load(&connected) < nsub && now_s() < deadline;)
        usleep(1000);
    for (i = 0; i < nsub; i++)
        mosquitto_subscribe(subs[i], NULL, filter, 1);
    for (deadline = now_s() + 10; atomic_load(&subscribed) < nsub && now_s() < deadline;)
        usleep(1000);
    if (atomic_load(&subscribed) < nsub) {
        fprintf(stderr, "mqtt_load: subscribers not ready\n");
        return 1;
    }
    for (i = 0; i < npub; i++) {
        pub_t *pb = &pubs[i];
        pb->idx = i;
        pthread_mutex_init(&pb->lock, NULL);
        pthread_cond_init(&pb->cond, NULL);
        snprintf(id, sizeof id, "%s-pub-%d", prefix, i);
        pb->m = client(id, 0);
        if (mosquitto_connect(pb->m, host, port, 60) != MOSQ_ERR_SUCCESS ||
            mosquitto_loop_start(pb->m) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "mqtt_load: cannot connect to %s:%d\n", host, port);
            return 1;
        }
    }
    for (deadline = now_s() + 10; atomic_load(&connected) < nsub + npub && now_s() < deadline;)
        usleep(1000);
    t0 = now_s();
    for (i = 0; i < npub; i++)
        pthread_create(&pubs[i].thread, NULL, publisher, &pubs[i]);
    usleep((useconds_t)secs * 1000000u);
    atomic_store(&stop, 1);
    t1 = now_s();
    for (i = 0; i < npub; i++) {
        pthread_join(pubs[i].thread, NULL);
        sent += atomic_load(&pubs[i].sent);
    }
    want = sent * nsub;
    for (deadline = now_s() + 10; atomic_load(&received) < want && now_s() < deadline;)
        usleep(1000);
    for (i = 0; i < npub; i++) {
        mosquitto_disconnect(pubs[i].m);
        mosquitto_loop_stop(pubs[i].m, false);
        mosquitto_destroy(pubs[i].m);
    }
    for (i = 0; i < nsub; i++) {
        mosquitto_disconnect(subs[i]);
        mosquitto_loop_stop(subs[i], false);
        mosquitto_destroy(subs[i]);
    }
    ns = atomic_load(&nsamples);
    if (ns > MAX_SAMPLES)
        ns = MAX_SAMPLES;
    qsort(samples, ns, sizeof *samples, cmp);
    printf("{\"sent\": %ld, \"received\": %ld, \"lost\": %ld, \"seconds\": %.3f, \"delivered_per_s\": %.1f, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f}\n",
           sent, (long)atomic_load(&received), want - (long)atomic_load(&received), t1 - t0,
           (double)atomic_load(&in_window) / (t1 - t0),
           ns ? samples[ns / 2] : 0.0, ns ? samples[(size_t)((double)ns * 0.99)] : 0.0);
    mosquitto_lib_cleanup();
    return 0;
}
