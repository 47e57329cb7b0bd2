@ The inner product of dnal's int8 dense convolution on Cortex-M4/M7 (DSP extension): two
@ output channels x two output pixels, four input codes per step. Called by dsp.rs.
@
@ Per step (16 MACs): one ldm brings both pixels' four gathered codes (i16 pairs), one ldrd
@ both channels' four weight codes (int8, packed so that sxtb16 and sxtb16 ror #8 give the
@ pairs that meet them), four sxtb16 and eight smlad: 14 instructions, plus the loop's
@ subs/bne once per two steps: 15 per 16 MACs.
@
@ Registers: r4-r7 accumulators [a0, a1, b0, b1] (channel a/b, pixel 0/1), r8-r11 the
@ codes (pixel 0 low, pixel 0 high, pixel 1 low, pixel 1 high pair), r12/lr the weights,
@ r0 scratch (the accumulator pointer is kept on the stack). AAPCS: r4-r11 are saved.
    .syntax unified
    .thumb

    .section .text.dnal_s8_dot2x2,"ax",%progbits
    .global dnal_s8_dot2x2
    .type dnal_s8_dot2x2,%function
    .thumb_func
    .p2align 2
dnal_s8_dot2x2:
    @ r0: 4 x i32 accumulators (in and out), r1: gathered codes (8 i16 per step, word
    @ aligned), r2: packed weights (8 bytes per step), r3: steps (at least 1)
    push {r0, r4-r11, lr}
    ldm r0, {r4-r7}
    @ An odd step count: one step first, then two per loop iteration.
    tst r3, #1
    beq 2f
    ldm r1!, {r8-r11}
    ldrd r12, lr, [r2], #8
    sxtb16 r0, r12
    smlad r4, r0, r8, r4
    smlad r5, r0, r10, r5
    sxtb16 r12, r12, ror #8
    smlad r4, r12, r9, r4
    smlad r5, r12, r11, r5
    sxtb16 r0, lr
    smlad r6, r0, r8, r6
    smlad r7, r0, r10, r7
    sxtb16 lr, lr, ror #8
    smlad r6, lr, r9, r6
    smlad r7, lr, r11, r7
    subs r3, r3, #1
    beq 3f
2:
    ldm r1!, {r8-r11}
    ldrd r12, lr, [r2], #8
    sxtb16 r0, r12
    smlad r4, r0, r8, r4
    smlad r5, r0, r10, r5
    sxtb16 r12, r12, ror #8
    smlad r4, r12, r9, r4
    smlad r5, r12, r11, r5
    sxtb16 r0, lr
    smlad r6, r0, r8, r6
    smlad r7, r0, r10, r7
    sxtb16 lr, lr, ror #8
    smlad r6, lr, r9, r6
    smlad r7, lr, r11, r7
    ldm r1!, {r8-r11}
    ldrd r12, lr, [r2], #8
    sxtb16 r0, r12
    smlad r4, r0, r8, r4
    smlad r5, r0, r10, r5
    sxtb16 r12, r12, ror #8
    smlad r4, r12, r9, r4
    smlad r5, r12, r11, r5
    sxtb16 r0, lr
    smlad r6, r0, r8, r6
    smlad r7, r0, r10, r7
    sxtb16 lr, lr, ror #8
    smlad r6, lr, r9, r6
    smlad r7, lr, r11, r7
    subs r3, r3, #2
    bne 2b
3:
    pop {r0}
    stm r0, {r4-r7}
    pop {r4-r11, pc}
    .size dnal_s8_dot2x2, . - dnal_s8_dot2x2
