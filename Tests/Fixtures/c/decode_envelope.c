/* Decodes a ptl Envelope (frame 0 of a message) with protobuf-c: proof that a worker written in
 * C can speak the protocol. Built by PTLClusterTests from Proto/ptl.proto with protoc-c.
 *   decode_envelope FILE   → prints version, type, run id, task key and tensor descriptors. */
#include <stdio.h>
#include <stdlib.h>
#include "ptl.pb-c.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s FILE\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    Ptl__V1__Envelope *env = ptl__v1__envelope__unpack(NULL, n, buf);
    if (!env) { fprintf(stderr, "not an Envelope\n"); return 1; }
    printf("version %u type %d run %s\n", env->protocol_version, env->type, env->run_id);
    if (env->task)
        printf("task round %u phase %d step %llu measurement %llu shard %u attempt %u\n", env->task->round, env->task->phase,
               (unsigned long long)env->task->step, (unsigned long long)env->task->measurement, env->task->shard, env->task->attempt);
    for (size_t i = 0; i < env->n_tensors; i++) {
        Ptl__V1__TensorDescriptor *d = env->tensors[i];
        printf("tensor %s dtype %d bytes %llu crc32c %u shape", d->name, d->dtype, (unsigned long long)d->byte_length, d->crc32c);
        for (size_t k = 0; k < d->n_shape; k++) printf(" %llu", (unsigned long long)d->shape[k]);
        printf("\n");
    }
    if (env->body_case == PTL__V1__ENVELOPE__BODY_RESULT)
        printf("result loss_sum %.6f tokens %llu\n", env->result->loss_sum, (unsigned long long)env->result->token_count);
    ptl__v1__envelope__free_unpacked(env, NULL);
    return 0;
}
