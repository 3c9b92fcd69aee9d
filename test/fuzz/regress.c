/* regress.c - replays every file of the given directories through the
 * fuzz harness's checks (fuzz_core.c) without libFuzzer: the corpus in
 * test/fuzz/corpus/ (seeds and every crash ever found) runs in make test.
 * Prints "N passed, N failed" (a failed check aborts with its location). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_one(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    int i, n = 0;

    for (i = 1; i < argc; i++) {
        DIR *dir = opendir(argv[i]);
        struct dirent *e;
        if (!dir) {
            perror(argv[i]);
            return 1;
        }
        while ((e = readdir(dir)) != NULL) {
            char path[4096];
            FILE *f;
            long len;
            uint8_t *buf;
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            f = fopen(path, "rb");
            if (!f)
                continue;
            fseek(f, 0, SEEK_END);
            len = ftell(f);
            fseek(f, 0, SEEK_SET);
            buf = malloc((size_t)len + 1);
            if (buf && fread(buf, 1, (size_t)len, f) == (size_t)len) {
                fuzz_one(buf, (size_t)len);
                n++;
            }
            free(buf);
            fclose(f);
        }
        closedir(dir);
    }
    printf("fuzz corpus replay: %d passed, 0 failed\n", n);
    return 0;
}
