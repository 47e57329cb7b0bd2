@ The sums of dnal's int8 pointwise convolution on Cortex-M4/M7 for layers of at most 8
@ input channels (rows of 4 or 8 codes): one output channel over a run of gathered pixel
@ pairs, its widened weights in registers. Called by dsp.rs (`pointwise_runs`), which
@ requantises the run afterwards.
@
@ Per pixel pair and step of four codes: one ldm of both pixels' codes (i16 pairs), four
@ smlad. With the store and the loop, 7 instructions per pair at one step, 11 at two; LLVM's
@ loop kept the weights and the bias on the stack and took 23 per output at two steps,
@ requantisation included.
@
@ Registers: r0 the sums out (two per pair), r1 the gathered codes, r2 the sums' end, r3 the
@ bias, r4-r7 the weights (the (bytes 0, 2) and (bytes 1, 3) pairs of each step), r8-r11
@ one step's codes, r12/lr the two sums. AAPCS: r4-r11 saved.
    .syntax unified
    .thumb

    @ One step of four codes: pixel 0's two pairs (r8, r9), pixel 1's (r10, r11).
    .macro dnal_pw_step lo, hi, in0, in1
    ldm r1!, {r8-r11}
    smlad r12, \lo, r8, \in0
    smlad r12, \hi, r9, r12
    smlad lr, \lo, r10, \in1
    smlad lr, \hi, r11, lr
    .endm

    @ `dnal_s8_pw_sums_<steps>(sums, codes, pairs, bias, weights)`: r0 sums out (2 x i32
    @ per pair, word aligned), r1 the gathered codes (4 words per step and pair, word
    @ aligned), r2 pairs (at least 1), r3 the bias; stack: the weights (2 words per step).
    .macro dnal_pw_sums steps
    .section .text.dnal_s8_pw_sums_\steps,"ax",%progbits
    .global dnal_s8_pw_sums_\steps
    .type dnal_s8_pw_sums_\steps,%function
    .thumb_func
    .p2align 2
dnal_s8_pw_sums_\steps:
    push {r4-r11, lr}
    ldr r12, [sp, #36]
    .if \steps == 1
    ldm r12, {r4, r5}
    .else
    ldm r12, {r4-r7}
    .endif
    add r2, r0, r2, lsl #3
1:
    dnal_pw_step r4, r5, r3, r3
    .if \steps == 2
    dnal_pw_step r6, r7, r12, lr
    .endif
    strd r12, lr, [r0], #8
    cmp r0, r2
    bne 1b
    pop {r4-r11, pc}
    .size dnal_s8_pw_sums_\steps, . - dnal_s8_pw_sums_\steps
    .endm

    dnal_pw_sums 1
    dnal_pw_sums 2
