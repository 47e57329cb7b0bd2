@ The inner loop of dnal's int8 3x3 depthwise convolution at stride 1 on Cortex-M4/M7 (DSP
@ extension): the sums of a run of output pixel pairs of one channel's row. Called by
@ depthwise_dsp.rs, which requantises the run afterwards.
@
@ Per pair, per kernel row: one word of the padded input row `a0 a1 a2 a3`, `sxtb16` to
@ (a0, a2) and (a1, a3), and four multiply-accumulates:
@   o0 += (a0, a2) . (w0, w2) + a1 * w1    (smlad, then smla<b>b)
@   o1 += (a1, a3) . (w0, w2) + a2 * w1    (smlad, then smlat<b>)
@ 25 instructions per pair (18 MACs) with the loop; LLVM's loop kept part of the six weights
@ on the stack and took 33.
@
@ Registers: r0 the sums out (two per pair), r1 the pair's row-0 word, r2 the padded row
@ length, r3 the bias (less the zero point's share), r4-r6 the rows' (w0, w2) pairs, r7 the
@ middle taps of rows 0 (bottom half) and 1 (top half), r8 row 2's (bottom half), r9/r10
@ the two sums, r11 the loaded word, r12/lr its even and odd pairs. AAPCS: r4-r11 saved.
    .syntax unified
    .thumb

    @ One kernel row of a pair, its input word in r11: the sums r9 and r10 (from \in0 and
    @ \in1) take the (w0, w2) pair \outer and the middle tap through \mid0 (pixel 0's,
    @ a1: bottom half of the odd pair) and \mid1 (pixel 1's, a2: top half of the even
    @ pair), each the half of \mid the row's w1 is in.
    .macro dnal_dw_row outer, mid, mid0, mid1, in0, in1
    sxtb16 r12, r11
    sxtb16 lr, r11, ror #8
    smlad r9, r12, \outer, \in0
    \mid0 r9, lr, \mid, r9
    smlad r10, lr, \outer, \in1
    \mid1 r10, r12, \mid, r10
    .endm

    .section .text.dnal_s8_dw3x3_pairs,"ax",%progbits
    .global dnal_s8_dw3x3_pairs
    .type dnal_s8_dw3x3_pairs,%function
    .thumb_func
    .p2align 2
dnal_s8_dw3x3_pairs:
    @ r0: sums out (2 x i32 per pair), r1: input codes (row 0 of the first pair's window),
    @ r2: codes per padded row, r3: bias; stack: weights (5 words: the (w0, w2) pairs of
    @ rows 0-2, then (w1 of row 0, w1 of row 1), then w1 of row 2), pairs (at least 1)
    push {r4-r11, lr}
    ldr r12, [sp, #36]
    ldr lr, [sp, #40]
    ldm r12, {r4-r8}
    @ The end of the sums, kept on the stack: every register holds an operand.
    add lr, r0, lr, lsl #3
    push {lr}
1:
    @ Row 1 (middle taps in r7's top half), the sums starting at the bias.
    ldr r11, [r1, r2]
    dnal_dw_row r5, r7, smlabt, smlatt, r3, r3
    @ Row 2.
    ldr r11, [r1, r2, lsl #1]
    dnal_dw_row r6, r8, smlabb, smlatb, r9, r10
    @ Row 0, the next pair two codes on.
    ldr r11, [r1], #2
    dnal_dw_row r4, r7, smlabb, smlatb, r9, r10
    strd r9, r10, [r0], #8
    ldr r11, [sp]
    cmp r0, r11
    bne 1b
    add sp, sp, #4
    pop {r4-r11, pc}
    .size dnal_s8_dw3x3_pairs, . - dnal_s8_dw3x3_pairs
