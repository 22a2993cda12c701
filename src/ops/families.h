/*
 * families.h - the function groups of every op family (src/ops/<family>.c),
 * declared once here for the op table and the families themselves.
 */
#ifndef ASPEN_FAMILIES_H
#define ASPEN_FAMILIES_H

#define FWD(x) void x(const asp_kctx *k);
#define INFER(x) aspen_status x(const aspen_graph *g, const asp_node *n, asp_tensor **out);
#define BWD(x) \
    aspen_status x(aspen_graph *g, const asp_node *n, const aspen_tensor *dout, aspen_tensor *din);
#define VERT(x) int x(const asp_tensor *t, const asp_node *n, int threads);
#define SCR(x) size_t x(const asp_tensor *t, const asp_node *n);
#define MACS(x) double x(const asp_tensor *t, const asp_node *n);

/* dense.c */
INFER(asp_dense_infer) FWD(asp_dense_forward) BWD(asp_dense_backward) VERT(asp_dense_vertices)
MACS(asp_dense_bwd_macs) MACS(asp_conv2d_bwd_data_macs) MACS(asp_conv2d_bwd_weight_macs)
MACS(asp_dense_macs) INFER(asp_dense_bwd_data_infer) FWD(asp_dense_bwd_data_forward)
INFER(asp_dense_bwd_weight_infer) FWD(asp_dense_bwd_weight_forward)
FWD(asp_dense_bwd_weight_sgd_forward) VERT(asp_dense_bwd_weight_sgd_vertices)
MACS(asp_dense_bwd_weight_sgd_macs)
INFER(asp_bias_grad_infer) VERT(asp_bias_grad_vertices) FWD(asp_bias_grad_forward)
/* conv.c */
INFER(asp_conv2d_infer) VERT(asp_conv2d_vertices) SCR(asp_conv2d_scratch)
/* Bytes of the weights vertex `vertex` of `nvertex` keeps packed across
 * runs of an inference program (k->packed), 0 where it keeps none. */
size_t asp_conv2d_packed_bytes(const asp_tensor *t, const asp_node *n, int vertex, int nvertex);
FWD(asp_conv2d_forward) BWD(asp_conv2d_backward) MACS(asp_conv2d_macs)
INFER(asp_conv2d_bwd_data_infer) VERT(asp_conv2d_bwd_data_vertices)
SCR(asp_conv2d_bwd_data_scratch) FWD(asp_conv2d_bwd_data_forward)
INFER(asp_conv2d_bwd_weight_infer) VERT(asp_conv2d_bwd_weight_vertices)
SCR(asp_conv2d_bwd_weight_scratch) FWD(asp_conv2d_bwd_weight_forward)
INFER(asp_conv2d_bwd_weight_part_infer) VERT(asp_conv2d_bwd_weight_part_vertices)
SCR(asp_conv2d_bwd_weight_part_scratch) FWD(asp_conv2d_bwd_weight_part_forward)
FWD(asp_sum_parts_forward) INFER(asp_sum_parts_infer)
/* pool.c */
INFER(asp_pool_infer) VERT(asp_pool_vertices) FWD(asp_maxpool2d_forward)
FWD(asp_avgpool2d_forward) BWD(asp_maxpool2d_backward) BWD(asp_avgpool2d_backward)
INFER(asp_pool_bwd_infer) VERT(asp_pool_bwd_vertices) FWD(asp_maxpool2d_bwd_forward)
FWD(asp_avgpool2d_bwd_forward) INFER(asp_gap_infer) VERT(asp_gap_vertices)
FWD(asp_gap_forward) BWD(asp_gap_backward) FWD(asp_gap_bwd_forward)
/* activation.c */
INFER(asp_act_infer) INFER(asp_act_bwd_infer) FWD(asp_relu_forward) BWD(asp_relu_backward)
FWD(asp_relu_bwd_forward) FWD(asp_leaky_relu_forward) BWD(asp_leaky_relu_backward)
FWD(asp_leaky_relu_bwd_forward) FWD(asp_sigmoid_forward) BWD(asp_sigmoid_backward)
FWD(asp_sigmoid_bwd_forward) FWD(asp_tanh_forward) BWD(asp_tanh_backward)
FWD(asp_tanh_bwd_forward) INFER(asp_mul_infer) FWD(asp_mul_forward) BWD(asp_mul_backward)
INFER(asp_fill_infer) FWD(asp_fill_forward)
/* norm.c */
INFER(asp_bn_infer) VERT(asp_bn_vertices) FWD(asp_bn_forward) BWD(asp_bn_backward)
INFER(asp_bn_apply_infer) FWD(asp_bn_apply_forward)
INFER(asp_bn_bwd_infer) VERT(asp_bn_bwd_vertices) FWD(asp_bn_bwd_forward)
INFER(asp_dropout_infer) FWD(asp_dropout_forward) BWD(asp_dropout_backward)
/* tensor.c */
INFER(asp_add_infer) FWD(asp_add_forward) BWD(asp_add_backward) INFER(asp_reduce_to_infer)
VERT(asp_reduce_to_vertices) FWD(asp_reduce_to_forward) INFER(asp_concat_infer)
VERT(asp_concat_vertices) FWD(asp_concat_forward) BWD(asp_concat_backward)
INFER(asp_slice_infer) FWD(asp_slice_forward) INFER(asp_reshape_infer)
FWD(asp_reshape_forward) BWD(asp_reshape_backward)
/* loss.c */
VERT(asp_rows_vertices) VERT(asp_one_vertex) FWD(asp_softmax_forward)
BWD(asp_softmax_backward) INFER(asp_softmax_bwd_infer) FWD(asp_softmax_bwd_forward)
INFER(asp_softmax_ce_infer) FWD(asp_softmax_ce_forward) BWD(asp_softmax_ce_backward)
INFER(asp_softmax_ce_bwd_infer) FWD(asp_softmax_ce_bwd_forward) INFER(asp_mse_infer)
FWD(asp_mse_forward) BWD(asp_mse_backward) INFER(asp_mse_bwd_infer) FWD(asp_mse_bwd_forward)
/* optim.c */
INFER(asp_update_infer) VERT(asp_update_vertices) FWD(asp_sgd_forward) FWD(asp_adam_forward)
FWD(asp_sgd_apply_forward)

/* onnx_elementwise.c */
INFER(asp_unary_infer) FWD(asp_unary_forward) BWD(asp_unary_backward) FWD(asp_unary_bwd_forward)
INFER(asp_binary_infer) FWD(asp_binary_forward) BWD(asp_binary_backward)
INFER(asp_binary_bwd_infer) FWD(asp_binary_bwd_forward) INFER(asp_expand_infer)
FWD(asp_expand_forward) BWD(asp_expand_backward)
INFER(asp_where_infer) FWD(asp_where_forward) BWD(asp_where_backward)
/* onnx_shape.c */
INFER(asp_transpose_infer) FWD(asp_transpose_forward) BWD(asp_transpose_backward)
INFER(asp_pad_infer) FWD(asp_pad_forward) BWD(asp_pad_backward) INFER(asp_pad_bwd_infer)
FWD(asp_pad_bwd_forward) INFER(asp_sslice_infer) FWD(asp_sslice_forward)
BWD(asp_sslice_backward) INFER(asp_sslice_bwd_infer) FWD(asp_sslice_bwd_forward)
INFER(asp_gather_infer) FWD(asp_gather_forward) BWD(asp_gather_backward)
INFER(asp_gather_bwd_infer) FWD(asp_gather_bwd_forward) INFER(asp_reduce_infer)
FWD(asp_reduce_forward) BWD(asp_reduce_backward) INFER(asp_reduce_bwd_infer)
FWD(asp_reduce_bwd_forward)
INFER(asp_argmax_infer) FWD(asp_argmax_forward)
/* onnx_nn.c */
INFER(asp_matmul_infer) VERT(asp_matmul_vertices) FWD(asp_matmul_forward)
BWD(asp_matmul_backward) MACS(asp_matmul_macs) FWD(asp_log_softmax_forward)
BWD(asp_log_softmax_backward) INFER(asp_log_softmax_bwd_infer) FWD(asp_log_softmax_bwd_forward)
INFER(asp_lrn_infer) FWD(asp_lrn_forward) BWD(asp_lrn_backward) FWD(asp_lrn_bwd_forward)
INFER(asp_conv_transpose_infer) BWD(asp_conv_transpose_backward)
/* darknet.c */
INFER(asp_dn_shortcut_infer) VERT(asp_dn_shortcut_vertices) FWD(asp_dn_shortcut_forward)
BWD(asp_dn_shortcut_backward) INFER(asp_dn_shortcut_bwd_infer)
VERT(asp_dn_shortcut_bwd_vertices) FWD(asp_dn_shortcut_bwd_forward)

#undef FWD
#undef INFER
#undef BWD
#undef VERT
#undef SCR
#undef MACS
#endif
