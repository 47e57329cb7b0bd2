@ 4 output channels x 4 output pixels of a 3x3 convolution, for Cortex-M4F/M7 (Thumb-2,
@ single-precision VFP), called from conv2d.rs for interior tiles whose three kernel rows are
@ all inside the input. Written out tap by tap (3 rows x 3 columns x 16 vmla), so it has no
@ inner loop: per kernel row one vldmia loads every input the row needs (6 values at stride 1,
@ 9 at stride 2) and per tap one vldmia loads the 4 output channels' weights (packed
@ [ic][ky][kx][4], streamed with write-back).
@
@ Registers: s0-s15 accumulators (s[4 * channel + pixel]), s16-s19 weights of one tap,
@ s20-s28 one row of inputs. AAPCS: r4-r6 and s16-s31 are callee-saved, pushed below.
@ Instructions per input channel: 3 kernel rows x (1 + 3 vldmia + 48 vmla) + 2 row steps + 3
@ for the channel loop = 161 for 144 MACs, about 1.12 per MAC.
    .syntax unified
    .thumb
    .fpu fpv4-sp-d16

    .section .text.dnal_conv3x3_s1_tile4x4,"ax",%progbits
    .global dnal_conv3x3_s1_tile4x4
    .type dnal_conv3x3_s1_tile4x4,%function
    .thumb_func
    .p2align 2
dnal_conv3x3_s1_tile4x4:
    @ r0: 16 f32 out, r1: weights, r2: input at tap (0, 0) of pixel 0,
    @ r3: input channels, [sp]: row stride in bytes, [sp, #4]: plane stride in bytes
    push {r4, r5, r6, lr}
    vpush {s16-s31}
    ldr r4, [sp, #80]
    ldr r5, [sp, #84]
    movs r6, #0
    vmov s0, r6
    vmov.f32 s1, s0
    vmov.f32 s2, s0
    vmov.f32 s3, s0
    vmov.f32 s4, s0
    vmov.f32 s5, s0
    vmov.f32 s6, s0
    vmov.f32 s7, s0
    vmov.f32 s8, s0
    vmov.f32 s9, s0
    vmov.f32 s10, s0
    vmov.f32 s11, s0
    vmov.f32 s12, s0
    vmov.f32 s13, s0
    vmov.f32 s14, s0
    vmov.f32 s15, s0
1:
    mov r6, r2
    @ kernel row 0: inputs s20-s25
    vldmia r6, {s20-s25}
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s20
    vmla.f32 s1, s16, s21
    vmla.f32 s2, s16, s22
    vmla.f32 s3, s16, s23
    vmla.f32 s4, s17, s20
    vmla.f32 s5, s17, s21
    vmla.f32 s6, s17, s22
    vmla.f32 s7, s17, s23
    vmla.f32 s8, s18, s20
    vmla.f32 s9, s18, s21
    vmla.f32 s10, s18, s22
    vmla.f32 s11, s18, s23
    vmla.f32 s12, s19, s20
    vmla.f32 s13, s19, s21
    vmla.f32 s14, s19, s22
    vmla.f32 s15, s19, s23
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s21
    vmla.f32 s1, s16, s22
    vmla.f32 s2, s16, s23
    vmla.f32 s3, s16, s24
    vmla.f32 s4, s17, s21
    vmla.f32 s5, s17, s22
    vmla.f32 s6, s17, s23
    vmla.f32 s7, s17, s24
    vmla.f32 s8, s18, s21
    vmla.f32 s9, s18, s22
    vmla.f32 s10, s18, s23
    vmla.f32 s11, s18, s24
    vmla.f32 s12, s19, s21
    vmla.f32 s13, s19, s22
    vmla.f32 s14, s19, s23
    vmla.f32 s15, s19, s24
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s22
    vmla.f32 s1, s16, s23
    vmla.f32 s2, s16, s24
    vmla.f32 s3, s16, s25
    vmla.f32 s4, s17, s22
    vmla.f32 s5, s17, s23
    vmla.f32 s6, s17, s24
    vmla.f32 s7, s17, s25
    vmla.f32 s8, s18, s22
    vmla.f32 s9, s18, s23
    vmla.f32 s10, s18, s24
    vmla.f32 s11, s18, s25
    vmla.f32 s12, s19, s22
    vmla.f32 s13, s19, s23
    vmla.f32 s14, s19, s24
    vmla.f32 s15, s19, s25
    add r6, r6, r4
    @ kernel row 1: inputs s20-s25
    vldmia r6, {s20-s25}
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s20
    vmla.f32 s1, s16, s21
    vmla.f32 s2, s16, s22
    vmla.f32 s3, s16, s23
    vmla.f32 s4, s17, s20
    vmla.f32 s5, s17, s21
    vmla.f32 s6, s17, s22
    vmla.f32 s7, s17, s23
    vmla.f32 s8, s18, s20
    vmla.f32 s9, s18, s21
    vmla.f32 s10, s18, s22
    vmla.f32 s11, s18, s23
    vmla.f32 s12, s19, s20
    vmla.f32 s13, s19, s21
    vmla.f32 s14, s19, s22
    vmla.f32 s15, s19, s23
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s21
    vmla.f32 s1, s16, s22
    vmla.f32 s2, s16, s23
    vmla.f32 s3, s16, s24
    vmla.f32 s4, s17, s21
    vmla.f32 s5, s17, s22
    vmla.f32 s6, s17, s23
    vmla.f32 s7, s17, s24
    vmla.f32 s8, s18, s21
    vmla.f32 s9, s18, s22
    vmla.f32 s10, s18, s23
    vmla.f32 s11, s18, s24
    vmla.f32 s12, s19, s21
    vmla.f32 s13, s19, s22
    vmla.f32 s14, s19, s23
    vmla.f32 s15, s19, s24
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s22
    vmla.f32 s1, s16, s23
    vmla.f32 s2, s16, s24
    vmla.f32 s3, s16, s25
    vmla.f32 s4, s17, s22
    vmla.f32 s5, s17, s23
    vmla.f32 s6, s17, s24
    vmla.f32 s7, s17, s25
    vmla.f32 s8, s18, s22
    vmla.f32 s9, s18, s23
    vmla.f32 s10, s18, s24
    vmla.f32 s11, s18, s25
    vmla.f32 s12, s19, s22
    vmla.f32 s13, s19, s23
    vmla.f32 s14, s19, s24
    vmla.f32 s15, s19, s25
    add r6, r6, r4
    @ kernel row 2: inputs s20-s25
    vldmia r6, {s20-s25}
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s20
    vmla.f32 s1, s16, s21
    vmla.f32 s2, s16, s22
    vmla.f32 s3, s16, s23
    vmla.f32 s4, s17, s20
    vmla.f32 s5, s17, s21
    vmla.f32 s6, s17, s22
    vmla.f32 s7, s17, s23
    vmla.f32 s8, s18, s20
    vmla.f32 s9, s18, s21
    vmla.f32 s10, s18, s22
    vmla.f32 s11, s18, s23
    vmla.f32 s12, s19, s20
    vmla.f32 s13, s19, s21
    vmla.f32 s14, s19, s22
    vmla.f32 s15, s19, s23
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s21
    vmla.f32 s1, s16, s22
    vmla.f32 s2, s16, s23
    vmla.f32 s3, s16, s24
    vmla.f32 s4, s17, s21
    vmla.f32 s5, s17, s22
    vmla.f32 s6, s17, s23
    vmla.f32 s7, s17, s24
    vmla.f32 s8, s18, s21
    vmla.f32 s9, s18, s22
    vmla.f32 s10, s18, s23
    vmla.f32 s11, s18, s24
    vmla.f32 s12, s19, s21
    vmla.f32 s13, s19, s22
    vmla.f32 s14, s19, s23
    vmla.f32 s15, s19, s24
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s22
    vmla.f32 s1, s16, s23
    vmla.f32 s2, s16, s24
    vmla.f32 s3, s16, s25
    vmla.f32 s4, s17, s22
    vmla.f32 s5, s17, s23
    vmla.f32 s6, s17, s24
    vmla.f32 s7, s17, s25
    vmla.f32 s8, s18, s22
    vmla.f32 s9, s18, s23
    vmla.f32 s10, s18, s24
    vmla.f32 s11, s18, s25
    vmla.f32 s12, s19, s22
    vmla.f32 s13, s19, s23
    vmla.f32 s14, s19, s24
    vmla.f32 s15, s19, s25
    add r2, r2, r5
    subs r3, r3, #1
    bne 1b
    vstmia r0, {s0-s15}
    vpop {s16-s31}
    pop {r4, r5, r6, pc}
    .size dnal_conv3x3_s1_tile4x4, . - dnal_conv3x3_s1_tile4x4

    .section .text.dnal_conv3x3_s2_tile4x4,"ax",%progbits
    .global dnal_conv3x3_s2_tile4x4
    .type dnal_conv3x3_s2_tile4x4,%function
    .thumb_func
    .p2align 2
dnal_conv3x3_s2_tile4x4:
    @ r0: 16 f32 out, r1: weights, r2: input at tap (0, 0) of pixel 0,
    @ r3: input channels, [sp]: row stride in bytes, [sp, #4]: plane stride in bytes
    push {r4, r5, r6, lr}
    vpush {s16-s31}
    ldr r4, [sp, #80]
    ldr r5, [sp, #84]
    movs r6, #0
    vmov s0, r6
    vmov.f32 s1, s0
    vmov.f32 s2, s0
    vmov.f32 s3, s0
    vmov.f32 s4, s0
    vmov.f32 s5, s0
    vmov.f32 s6, s0
    vmov.f32 s7, s0
    vmov.f32 s8, s0
    vmov.f32 s9, s0
    vmov.f32 s10, s0
    vmov.f32 s11, s0
    vmov.f32 s12, s0
    vmov.f32 s13, s0
    vmov.f32 s14, s0
    vmov.f32 s15, s0
1:
    mov r6, r2
    @ kernel row 0: inputs s20-s28
    vldmia r6, {s20-s28}
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s20
    vmla.f32 s1, s16, s22
    vmla.f32 s2, s16, s24
    vmla.f32 s3, s16, s26
    vmla.f32 s4, s17, s20
    vmla.f32 s5, s17, s22
    vmla.f32 s6, s17, s24
    vmla.f32 s7, s17, s26
    vmla.f32 s8, s18, s20
    vmla.f32 s9, s18, s22
    vmla.f32 s10, s18, s24
    vmla.f32 s11, s18, s26
    vmla.f32 s12, s19, s20
    vmla.f32 s13, s19, s22
    vmla.f32 s14, s19, s24
    vmla.f32 s15, s19, s26
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s21
    vmla.f32 s1, s16, s23
    vmla.f32 s2, s16, s25
    vmla.f32 s3, s16, s27
    vmla.f32 s4, s17, s21
    vmla.f32 s5, s17, s23
    vmla.f32 s6, s17, s25
    vmla.f32 s7, s17, s27
    vmla.f32 s8, s18, s21
    vmla.f32 s9, s18, s23
    vmla.f32 s10, s18, s25
    vmla.f32 s11, s18, s27
    vmla.f32 s12, s19, s21
    vmla.f32 s13, s19, s23
    vmla.f32 s14, s19, s25
    vmla.f32 s15, s19, s27
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s22
    vmla.f32 s1, s16, s24
    vmla.f32 s2, s16, s26
    vmla.f32 s3, s16, s28
    vmla.f32 s4, s17, s22
    vmla.f32 s5, s17, s24
    vmla.f32 s6, s17, s26
    vmla.f32 s7, s17, s28
    vmla.f32 s8, s18, s22
    vmla.f32 s9, s18, s24
    vmla.f32 s10, s18, s26
    vmla.f32 s11, s18, s28
    vmla.f32 s12, s19, s22
    vmla.f32 s13, s19, s24
    vmla.f32 s14, s19, s26
    vmla.f32 s15, s19, s28
    add r6, r6, r4
    @ kernel row 1: inputs s20-s28
    vldmia r6, {s20-s28}
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s20
    vmla.f32 s1, s16, s22
    vmla.f32 s2, s16, s24
    vmla.f32 s3, s16, s26
    vmla.f32 s4, s17, s20
    vmla.f32 s5, s17, s22
    vmla.f32 s6, s17, s24
    vmla.f32 s7, s17, s26
    vmla.f32 s8, s18, s20
    vmla.f32 s9, s18, s22
    vmla.f32 s10, s18, s24
    vmla.f32 s11, s18, s26
    vmla.f32 s12, s19, s20
    vmla.f32 s13, s19, s22
    vmla.f32 s14, s19, s24
    vmla.f32 s15, s19, s26
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s21
    vmla.f32 s1, s16, s23
    vmla.f32 s2, s16, s25
    vmla.f32 s3, s16, s27
    vmla.f32 s4, s17, s21
    vmla.f32 s5, s17, s23
    vmla.f32 s6, s17, s25
    vmla.f32 s7, s17, s27
    vmla.f32 s8, s18, s21
    vmla.f32 s9, s18, s23
    vmla.f32 s10, s18, s25
    vmla.f32 s11, s18, s27
    vmla.f32 s12, s19, s21
    vmla.f32 s13, s19, s23
    vmla.f32 s14, s19, s25
    vmla.f32 s15, s19, s27
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s22
    vmla.f32 s1, s16, s24
    vmla.f32 s2, s16, s26
    vmla.f32 s3, s16, s28
    vmla.f32 s4, s17, s22
    vmla.f32 s5, s17, s24
    vmla.f32 s6, s17, s26
    vmla.f32 s7, s17, s28
    vmla.f32 s8, s18, s22
    vmla.f32 s9, s18, s24
    vmla.f32 s10, s18, s26
    vmla.f32 s11, s18, s28
    vmla.f32 s12, s19, s22
    vmla.f32 s13, s19, s24
    vmla.f32 s14, s19, s26
    vmla.f32 s15, s19, s28
    add r6, r6, r4
    @ kernel row 2: inputs s20-s28
    vldmia r6, {s20-s28}
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s20
    vmla.f32 s1, s16, s22
    vmla.f32 s2, s16, s24
    vmla.f32 s3, s16, s26
    vmla.f32 s4, s17, s20
    vmla.f32 s5, s17, s22
    vmla.f32 s6, s17, s24
    vmla.f32 s7, s17, s26
    vmla.f32 s8, s18, s20
    vmla.f32 s9, s18, s22
    vmla.f32 s10, s18, s24
    vmla.f32 s11, s18, s26
    vmla.f32 s12, s19, s20
    vmla.f32 s13, s19, s22
    vmla.f32 s14, s19, s24
    vmla.f32 s15, s19, s26
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s21
    vmla.f32 s1, s16, s23
    vmla.f32 s2, s16, s25
    vmla.f32 s3, s16, s27
    vmla.f32 s4, s17, s21
    vmla.f32 s5, s17, s23
    vmla.f32 s6, s17, s25
    vmla.f32 s7, s17, s27
    vmla.f32 s8, s18, s21
    vmla.f32 s9, s18, s23
    vmla.f32 s10, s18, s25
    vmla.f32 s11, s18, s27
    vmla.f32 s12, s19, s21
    vmla.f32 s13, s19, s23
    vmla.f32 s14, s19, s25
    vmla.f32 s15, s19, s27
    vldmia r1!, {s16-s19}
    vmla.f32 s0, s16, s22
    vmla.f32 s1, s16, s24
    vmla.f32 s2, s16, s26
    vmla.f32 s3, s16, s28
    vmla.f32 s4, s17, s22
    vmla.f32 s5, s17, s24
    vmla.f32 s6, s17, s26
    vmla.f32 s7, s17, s28
    vmla.f32 s8, s18, s22
    vmla.f32 s9, s18, s24
    vmla.f32 s10, s18, s26
    vmla.f32 s11, s18, s28
    vmla.f32 s12, s19, s22
    vmla.f32 s13, s19, s24
    vmla.f32 s14, s19, s26
    vmla.f32 s15, s19, s28
    add r2, r2, r5
    subs r3, r3, #1
    bne 1b
    vstmia r0, {s0-s15}
    vpop {s16-s31}
    pop {r4, r5, r6, pc}
    .size dnal_conv3x3_s2_tile4x4, . - dnal_conv3x3_s2_tile4x4
