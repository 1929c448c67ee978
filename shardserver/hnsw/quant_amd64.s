#include "textflag.h"

// The Int8 kernels: sum of c[i]*u[i] over len(u) elements (a multiple of 32), c
// unsigned bytes, u int16. Bytes are widened to words (VPMOVZXBW) and multiplied and
// summed in pairs into int32 lanes (VPMADDWD); uMax keeps every lane below 2^31. The
// lanes are summed in int64, so the result is exact and equal to the scalar kernel's.

// func dotU8I16AVX2(c []byte, u []int16) int64
TEXT ·dotU8I16AVX2(SB), NOSPLIT, $0-56
	MOVQ  c_base+0(FP), SI
	MOVQ  u_base+24(FP), DI
	MOVQ  u_len+32(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	CMPQ  CX, $64
	JL    q8avx2_32

q8avx2_64:
	VPMOVZXBW (SI), Y4
	VPMOVZXBW 16(SI), Y5
	VPMOVZXBW 32(SI), Y6
	VPMOVZXBW 48(SI), Y7
	VPMADDWD  (DI), Y4, Y4
	VPMADDWD  32(DI), Y5, Y5
	VPMADDWD  64(DI), Y6, Y6
	VPMADDWD  96(DI), Y7, Y7
	VPADDD    Y4, Y0, Y0
	VPADDD    Y5, Y1, Y1
	VPADDD    Y6, Y2, Y2
	VPADDD    Y7, Y3, Y3
	ADDQ      $64, SI
	ADDQ      $128, DI
	SUBQ      $64, CX
	CMPQ      CX, $64
	JGE       q8avx2_64

q8avx2_32:
	CMPQ      CX, $32
	JL        q8avx2_reduce
	VPMOVZXBW (SI), Y4
	VPMOVZXBW 16(SI), Y5
	VPMADDWD  (DI), Y4, Y4
	VPMADDWD  32(DI), Y5, Y5
	VPADDD    Y4, Y0, Y0
	VPADDD    Y5, Y1, Y1
	ADDQ      $32, SI
	ADDQ      $64, DI
	SUBQ      $32, CX
	JMP       q8avx2_32

q8avx2_reduce:
	// Widen to int64 before adding accumulators: each lane is below 2^31, their sum
	// need not be.
	VEXTRACTI128 $1, Y0, X4
	VPMOVSXDQ    X0, Y0
	VPMOVSXDQ    X4, Y4
	VPADDQ       Y4, Y0, Y0
	VEXTRACTI128 $1, Y1, X4
	VPMOVSXDQ    X1, Y1
	VPMOVSXDQ    X4, Y4
	VPADDQ       Y4, Y1, Y1
	VEXTRACTI128 $1, Y2, X4
	VPMOVSXDQ    X2, Y2
	VPMOVSXDQ    X4, Y4
	VPADDQ       Y4, Y2, Y2
	VEXTRACTI128 $1, Y3, X4
	VPMOVSXDQ    X3, Y3
	VPMOVSXDQ    X4, Y4
	VPADDQ       Y4, Y3, Y3
	VPADDQ       Y1, Y0, Y0
	VPADDQ       Y3, Y2, Y2
	VPADDQ       Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDQ       X1, X0, X0
	VPSHUFD      $0x4e, X0, X1
	VPADDQ       X1, X0, X0
	VMOVQ        X0, AX
	VZEROUPPER
	MOVQ         AX, ret+48(FP)
	RET

// func dotU8I16AVX512(c []byte, u []int16) int64
TEXT ·dotU8I16AVX512(SB), NOSPLIT, $0-56
	MOVQ   c_base+0(FP), SI
	MOVQ   u_base+24(FP), DI
	MOVQ   u_len+32(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	CMPQ   CX, $64
	JL     q8avx512_32

q8avx512_64:
	VPMOVZXBW (SI), Z4
	VPMOVZXBW 32(SI), Z5
	VPMADDWD  (DI), Z4, Z4
	VPMADDWD  64(DI), Z5, Z5
	VPADDD    Z4, Z0, Z0
	VPADDD    Z5, Z1, Z1
	ADDQ      $64, SI
	ADDQ      $128, DI
	SUBQ      $64, CX
	CMPQ      CX, $64
	JGE       q8avx512_64

q8avx512_32:
	CMPQ      CX, $32
	JL        q8avx512_reduce
	VPMOVZXBW (SI), Z4
	VPMADDWD  (DI), Z4, Z4
	VPADDD    Z4, Z0, Z0

q8avx512_reduce:
	VEXTRACTI64X4 $1, Z0, Y4
	VPMOVSXDQ     Y0, Z0
	VPMOVSXDQ     Y4, Z4
	VPADDQ        Z4, Z0, Z0
	VEXTRACTI64X4 $1, Z1, Y4
	VPMOVSXDQ     Y1, Z1
	VPMOVSXDQ     Y4, Z4
	VPADDQ        Z4, Z1, Z1
	VPADDQ        Z1, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDQ        Y1, Y0, Y0
	VEXTRACTI128  $1, Y0, X1
	VPADDQ        X1, X0, X0
	VPSHUFD       $0x4e, X0, X1
	VPADDQ        X1, X0, X0
	VMOVQ         X0, AX
	VZEROUPPER
	MOVQ          AX, ret+48(FP)
	RET

// The VNNI kernel takes the query split into bytes (see splitQuery): h = u>>7 in
// -64..63 and l = u&127 in 0..127, so that u = 128*h + l, each a signed byte. VPDPBUSD
// multiplies 64 unsigned codes by 64 signed bytes and adds them in fours to 16 int32
// lanes: one instruction for 64 dimensions of each half. Up to MaxDim a lane sums at
// most 256 products of each half: 128*256*255*64 + 256*255*127 < 2^31, so the lanes
// are combined as 128*h + l in int32 and only then summed in int64: exact, equal to
// the scalar kernel's.

// func dotU8I8VNNI(c []byte, q []int8) int64
TEXT ·dotU8I8VNNI(SB), NOSPLIT, $0-56
	MOVQ   c_base+0(FP), SI
	MOVQ   c_len+8(FP), CX
	MOVQ   q_base+24(FP), DI
	MOVQ   q_len+32(FP), R8
	SHRQ   $1, R8 // the l half starts len(q)/2 bytes in
	LEAQ   (DI)(R8*1), R9
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	CMPQ   CX, $128
	JL     vnni_64

vnni_128:
	VMOVDQU64 (SI), Z4
	VMOVDQU64 64(SI), Z5
	VPDPBUSD  (DI), Z4, Z0
	VPDPBUSD  (R9), Z4, Z1
	VPDPBUSD  64(DI), Z5, Z2
	VPDPBUSD  64(R9), Z5, Z3
	ADDQ      $128, SI
	ADDQ      $128, DI
	ADDQ      $128, R9
	SUBQ      $128, CX
	CMPQ      CX, $128
	JGE       vnni_128

vnni_64:
	CMPQ      CX, $64
	JL        vnni_32
	VMOVDQU64 (SI), Z4
	VPDPBUSD  (DI), Z4, Z0
	VPDPBUSD  (R9), Z4, Z1
	ADDQ      $64, SI
	ADDQ      $64, DI
	ADDQ      $64, R9
	SUBQ      $64, CX

vnni_32:
	CMPQ      CX, $32
	JL        vnni_reduce
	// 32 codes left: a VEX load zeroes the upper half of Z4, so the 64 query bytes
	// read (the query is padded to a multiple of 64) meet zero codes there.
	VMOVDQU   (SI), Y4
	VPDPBUSD  (DI), Z4, Z2
	VPDPBUSD  (R9), Z4, Z3

vnni_reduce:
	VPADDD        Z2, Z0, Z0
	VPADDD        Z3, Z1, Z1
	VPSLLD        $7, Z0, Z0
	VPADDD        Z1, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y4
	VPMOVSXDQ     Y0, Z0
	VPMOVSXDQ     Y4, Z4
	VPADDQ        Z4, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDQ        Y1, Y0, Y0
	VEXTRACTI128  $1, Y0, X1
	VPADDQ        X1, X0, X0
	VPSHUFD       $0x4e, X0, X1
	VPADDQ        X1, X0, X0
	VMOVQ         X0, AX
	VZEROUPPER
	MOVQ          AX, ret+48(FP)
	RET

// The preparation of a query (see Index.prepare), 16 dimensions at a time, the last
// ones under a mask; equal to the portable loops: a maximum is exact, and each float32
// operation rounds as the Go one does.

// func scaleMaxAVX512(v, s []float32) float32: the largest |v[i]*s[i]|.
TEXT ·scaleMaxAVX512(SB), NOSPLIT, $0-52
	MOVQ         v_base+0(FP), SI
	MOVQ         v_len+8(FP), CX
	MOVQ         s_base+24(FP), DI
	VPXORD       Z0, Z0, Z0
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z7

smax_16:
	CMPQ    CX, $16
	JL      smax_tail
	VMOVUPS (SI), Z1
	VMULPS  (DI), Z1, Z1
	VPANDD  Z7, Z1, Z1
	VMAXPS  Z1, Z0, Z0
	ADDQ    $64, SI
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     smax_16

smax_tail:
	TESTQ   CX, CX
	JZ      smax_reduce
	MOVL    $1, AX
	SHLL    CX, AX
	DECL    AX
	KMOVW   AX, K1
	VMOVUPS.Z (SI), K1, Z1
	VMOVUPS.Z (DI), K1, Z2
	VMULPS  Z2, Z1, Z1
	VPANDD  Z7, Z1, Z1
	VMAXPS  Z1, Z0, Z0

smax_reduce:
	VEXTRACTF64X4 $1, Z0, Y1
	VMAXPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VMAXPS        X1, X0, X0
	VPERMILPS     $0x4e, X0, X1
	VMAXPS        X1, X0, X0
	VPERMILPS     $0xb1, X0, X1
	VMAXPS        X1, X0, X0
	VZEROUPPER
	MOVSS         X0, ret+48(FP)
	RET

// func quantizeAVX512(v, s []float32, inv float32, u []int16): u[i] = the int16 of
// r + copysign(0.5, r), truncated, with r = v[i]*s[i]*inv; len(u) >= len(v).
TEXT ·quantizeAVX512(SB), NOSPLIT, $0-80
	MOVQ         v_base+0(FP), SI
	MOVQ         v_len+8(FP), CX
	MOVQ         s_base+24(FP), DI
	VBROADCASTSS inv+48(FP), Z6
	MOVQ         u_base+56(FP), DX
	MOVL         $0x80000000, AX
	VPBROADCASTD AX, Z7
	MOVL         $0x3f000000, AX
	VPBROADCASTD AX, Z8

quant_16:
	CMPQ       CX, $16
	JL         quant_tail
	VMOVUPS    (SI), Z1
	VMULPS     (DI), Z1, Z1
	VMULPS     Z6, Z1, Z1
	VPANDD     Z7, Z1, Z2
	VPORD      Z8, Z2, Z2
	VADDPS     Z2, Z1, Z1
	VCVTTPS2DQ Z1, Z1
	VPMOVDW    Z1, (DX)
	ADDQ       $64, SI
	ADDQ       $64, DI
	ADDQ       $32, DX
	SUBQ       $16, CX
	JMP        quant_16

quant_tail:
	TESTQ      CX, CX
	JZ         quant_done
	MOVL       $1, AX
	SHLL       CX, AX
	DECL       AX
	KMOVW      AX, K1
	VMOVUPS.Z  (SI), K1, Z1
	VMOVUPS.Z  (DI), K1, Z2
	VMULPS     Z2, Z1, Z1
	VMULPS     Z6, Z1, Z1
	VPANDD     Z7, Z1, Z2
	VPORD      Z8, Z2, Z2
	VADDPS     Z2, Z1, Z1
	VCVTTPS2DQ Z1, Z1
	VPMOVDW    Z1, K1, (DX)

quant_done:
	VZEROUPPER
	RET

// func splitAVX512(u []int16, b []int8): splitQuery's loop, 32 values at a time;
// len(u) a multiple of 32, the l half at len(b)/2.
TEXT ·splitAVX512(SB), NOSPLIT, $0-48
	MOVQ         u_base+0(FP), SI
	MOVQ         u_len+8(FP), CX
	MOVQ         b_base+24(FP), DI
	MOVQ         b_len+32(FP), R8
	SHRQ         $1, R8
	LEAQ         (DI)(R8*1), R9
	MOVL         $127, AX
	VPBROADCASTW AX, Z7

split_32:
	CMPQ     CX, $32
	JL       split_done
	VMOVDQU64 (SI), Z1
	VPSRAW   $7, Z1, Z2
	VPANDD   Z7, Z1, Z3
	VPMOVWB  Z2, (DI)
	VPMOVWB  Z3, (R9)
	ADDQ     $64, SI
	ADDQ     $32, DI
	ADDQ     $32, R9
	SUBQ     $32, CX
	JMP      split_32

split_done:
	VZEROUPPER
	RET
