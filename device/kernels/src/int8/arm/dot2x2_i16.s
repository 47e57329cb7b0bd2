@ The inner product of dnal's int8 dense convolution on Cortex-M4/M7 (DSP extension) for
@ weights already widened to i16 pairs: two output channels x two output pixels, four input
@ codes per step. Called by dsp.rs, which widens a channel pair's weights once and then runs
@ them against several pixel pairs.
@
@ Per step (16 MACs): one ldm brings both pixels' four gathered codes, one ldm both channels'
@ four weights (i16 pairs), and eight smlad: 10 instructions. Unrolled four times, with the
@ loop's end compared against the weights' end kept on the stack (all 14 registers hold
@ operands): 43 per 64 MACs, 0.67 per MAC, against 0.94 with the int8 weights widened in
@ the loop (dot2x2.s).
@
@ Registers: r4-r7 accumulators [a0, a1, b0, b1] (channel a/b, pixel 0/1), r8-r11 the
@ codes (pixel 0 low, pixel 0 high, pixel 1 low, pixel 1 high pair), r0/r3 channel a's
@ weight pairs, r12/lr channel b's, r1/r2 the pointers. AAPCS: r4-r11 are saved.
    .syntax unified
    .thumb

    .macro dnal_step_i16
    ldm r1!, {r8-r11}
    ldm r2!, {r0, r3, r12, lr}
    smlad r4, r0, r8, r4
    smlad r5, r0, r10, r5
    smlad r4, r3, r9, r4
    smlad r5, r3, r11, r5
    smlad r6, r12, r8, r6
    smlad r7, r12, r10, r7
    smlad r6, lr, r9, r6
    smlad r7, lr, r11, r7
    .endm

    .section .text.dnal_s8_dot2x2_i16,"ax",%progbits
    .global dnal_s8_dot2x2_i16
    .type dnal_s8_dot2x2_i16,%function
    .thumb_func
    .p2align 2
dnal_s8_dot2x2_i16:
    @ r0: 4 x i32 accumulators (in and out), r1: gathered codes (8 i16 per step, word
    @ aligned), r2: widened weights (8 i16 per step, word aligned), r3: steps (at least 1)
    push {r0, r4-r11, lr}
    ldm r0, {r4-r7}
    add r0, r2, r3, lsl #4
    push {r0}
    @ N: bit 0 of the step count, C: bit 1. Neither ldm nor smlad sets them.
    lsls r3, r3, #31
    bpl 1f
    dnal_step_i16
1:
    bcc 2f
    dnal_step_i16
    dnal_step_i16
2:
    @ What is left is a multiple of four steps.
    ldr r0, [sp]
    cmp r2, r0
    beq 4f
3:
    dnal_step_i16
    dnal_step_i16
    dnal_step_i16
    dnal_step_i16
    ldr r0, [sp]
    cmp r2, r0
    bne 3b
4:
    add sp, sp, #4
    pop {r0}
    stm r0, {r4-r7}
    pop {r4-r11, pc}
    .size dnal_s8_dot2x2_i16, . - dnal_s8_dot2x2_i16

@ A channel pair's packed int8 weights widened to the i16 pairs dnal_s8_dot2x2_i16 reads:
@ per step of 8 codes (channel a's word, then b's), sxtb16 of each word and of it rotated
@ by 8, four words out. Two steps per loop: one ldm, eight sxtb16, two stm, 6.5
@ instructions per step, where LLVM's loop takes 13 (a load, an add and a store each).
@
@ Registers: r0 wide (out), r1 weights, r2 the weights' end, r3/r4/r5/r12 two steps' words,
@ r6-r9 four widened words. AAPCS: r4-r9 are saved; no calls, so six registers suffice.
    @ One step: channel a's word and b's, widened, stored.
    .macro dnal_widen_step a, b
    sxtb16 r6, \a
    sxtb16 r7, \a, ror #8
    sxtb16 r8, \b
    sxtb16 r9, \b, ror #8
    stm r0!, {r6-r9}
    .endm

    .section .text.dnal_s8_widen_pair,"ax",%progbits
    .global dnal_s8_widen_pair
    .type dnal_s8_widen_pair,%function
    .thumb_func
    .p2align 2
dnal_s8_widen_pair:
    @ r0: 4 words out per step (word aligned), r1: 8 codes in per step (word aligned),
    @ r2: steps (at least 1)
    push {r4-r9}
    tst r2, #1
    add r2, r1, r2, lsl #3
    beq 1f
    ldm r1!, {r3, r4}
    dnal_widen_step r3, r4
1:
    cmp r1, r2
    beq 3f
2:
    ldm r1!, {r3, r4, r5, r12}
    dnal_widen_step r3, r4
    dnal_widen_step r5, r12
    cmp r1, r2
    bne 2b
3:
    pop {r4-r9}
    bx lr
    .size dnal_s8_widen_pair, . - dnal_s8_widen_pair
