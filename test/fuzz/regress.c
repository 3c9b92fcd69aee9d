/* regress.c - replays every file of the given directories through the
 * fuzz harness's checks (fuzz_core.c) without libFuzzer: the corpus in
 * test/fuzz/corpus/ (the seeds, and the inputs of the crashes `make fuzz`
 * found, which it copies there) runs in make test. Prints "N passed, N
 * failed": a file that cannot be read, and a directory with no file, are
 * failures; a failed check aborts with its location. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_one(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    int i, n = 0, bad = 0;

    for (i = 1; i < argc; i++) {
        DIR *dir = opendir(argv[i]);
        struct dirent *e;
        int here = 0;
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
            len = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
            buf = len >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)len + 1) : NULL;
            if (buf && fread(buf, 1, (size_t)len, f) == (size_t)len) {
                fuzz_one(buf, (size_t)len);
                n++;
                here++;
            } else {
                fprintf(stderr, "%s: cannot be read\n", path);
                bad++;
            }
            free(buf);
            if (f)
                fclose(f);
        }
        closedir(dir);
        if (!here) {
            fprintf(stderr, "%s: no input to replay\n", argv[i]);
            bad++;
        }
    }
    printf("fuzz corpus replay: %d passed, %d failed\n", n, bad);
    return bad ? 1 : 0;
}
