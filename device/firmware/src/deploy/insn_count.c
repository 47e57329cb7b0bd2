/*
 * dnal instruction counter: a QEMU TCG plugin (plugin API version 1, QEMU 7.2).
 *
 * Counts the executed guest instructions (per guest thread in user mode), and at each executed
 * marker instruction (Thumb 0xbf70 or AArch64 0xd5032bff, hints that execute as NOP) writes one
 * line to the file given by `out=PATH`: the number of instructions the marker's thread executed
 * before it. The counts of two consecutive markers bracket an inference or a layer.
 *
 * Debian ships no qemu-plugin.h, so the few declarations needed are written here, after the
 * documented v1 API.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;

typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*tb_translated_fn)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_fn)(unsigned int vcpu_index, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_translated_fn cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_fn cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_fn cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/*
 * System emulation runs one vCPU here (the machines used are single core): one counter, added
 * inline, is exact. In user mode every guest thread is a vCPU on its own host thread, and
 * another thread (the harness's main thread on its way into `join`) may run while the
 * inference thread is between two markers; so there each host thread counts its own
 * instructions, in a callback per block, and a marker reads its own thread's count.
 */
static bool per_thread;
static uint64_t executed;
static __thread uint64_t thread_executed;
static FILE *out;

static void on_block(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    thread_executed += (uint64_t)(uintptr_t)userdata;
}

/*
 * The whole block's instruction count is added when the block starts, so at a marker that is
 * `remaining` instructions from the block's end, `executed - remaining` instructions ran
 * before it.
 */
static void on_marker(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    uint64_t remaining = (uint64_t)(uintptr_t)userdata;
    uint64_t before_block_end = per_thread ? thread_executed : executed;
    fprintf(out, "%llu\n", (unsigned long long)(before_block_end - remaining));
    fflush(out);
}

/* Set at install from the target's name: AArch64 markers are 4 bytes, Thumb ones 2. */
static bool aarch64;

static bool is_marker(struct qemu_plugin_insn *insn)
{
    size_t size = qemu_plugin_insn_size(insn);
    const unsigned char *b = qemu_plugin_insn_data(insn);
    if (aarch64) {
        return size == 4 && b[0] == 0xff && b[1] == 0x2b && b[2] == 0x03 && b[3] == 0xd5;
    }
    /*
     * Thumb: match the first halfword only. When the next instruction crosses a page, QEMU
     * 7.2 ends the block before it but appends the bytes it peeked at to this instruction's
     * data (size 4 for the 2-byte marker). No 32-bit Thumb instruction starts with 0xbf70.
     */
    return size >= 2 && b[0] == 0x70 && b[1] == 0xbf;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (per_thread) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (is_marker(insn)) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)(n - i));
        }
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv)
{
    aarch64 = info && info->target_name && strcmp(info->target_name, "aarch64") == 0;
    per_thread = !(info && info->system_emulation);
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    out = path ? fopen(path, "w") : stderr;
    if (!out) {
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
