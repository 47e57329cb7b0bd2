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

@ The 16 inner products of int8 Winograd F(2x2, 3x3) (winograd.rs) for two output channels
@ and two tiles: per position of the 4x4 tile, dnal_s8_dot2x2_i16's sums over the layer's
@ steps of four input channels, from zero (the first step multiplies with SMUAD instead of
@ accumulating), then for an odd count of channel pairs the last pair (one word of each
@ tile and channel: 4 SMLAD). The positions' codes and weights follow one another, so both
@ pointers simply run on, and the steps are unrolled: one function per count of input
@ channel pairs, dnal_s8_winograd_products_<pairs>, each 10 instructions per step, 6 for
@ the last pair and 6 per position, in one call where 16 calls of dnal_s8_dot2x2_i16 each
@ saved and restored eight registers and cleared its sums.
    .macro dnal_first_step_i16
    ldm r1!, {r8-r11}
    ldm r2!, {r0, r3, r12, lr}
    smuad r4, r0, r8
    smuad r5, r0, r10
    smlad r4, r3, r9, r4
    smlad r5, r3, r11, r5
    smuad r6, r12, r8
    smuad r7, r12, r10
    smlad r6, lr, r9, r6
    smlad r7, lr, r11, r7
    .endm

    @ The last of an odd count of pairs: tile 0's word and tile 1's, channel a's and b's.
    .macro dnal_last_pair_i16
    ldm r1!, {r8, r10}
    ldm r2!, {r0, r12}
    smlad r4, r0, r8, r4
    smlad r5, r0, r10, r5
    smlad r6, r12, r8, r6
    smlad r7, r12, r10, r7
    .endm

    .macro dnal_winograd_products pairs
    .section .text.dnal_s8_winograd_products_\pairs,"ax",%progbits
    .global dnal_s8_winograd_products_\pairs
    .type dnal_s8_winograd_products_\pairs,%function
    .thumb_func
    .p2align 2
dnal_s8_winograd_products_\pairs:
    @ r0: 64 x i32 out (per position the four sums, as dnal_s8_dot2x2_i16 orders them),
    @ r1: transformed codes, r2: transformed weights (16 positions x 2 x pairs words each,
    @ word aligned; at least 2 pairs)
    push {r4-r11, lr}
    @ [sp]: where the next position's sums go, [sp, #4]: the end of the weights.
    add r3, r2, #(128 * \pairs)
    push {r0, r3}
1:
    dnal_first_step_i16
    .rept \pairs / 2 - 1
    dnal_step_i16
    .endr
    .if \pairs % 2
    dnal_last_pair_i16
    .endif
    ldr r0, [sp]
    stm r0!, {r4-r7}
    str r0, [sp]
    ldr r0, [sp, #4]
    cmp r2, r0
    bne 1b
    add sp, sp, #8
    pop {r4-r11, pc}
    .size dnal_s8_winograd_products_\pairs, . - dnal_s8_winograd_products_\pairs
    .endm

    .irp pairs, 2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48
    dnal_winograd_products \pairs
    .endr

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
