// What the node, edge and halo passes share: reading a node's record, its activation at
// the playhead and its selection flag from the per-model and per-clip textures, and the
// projection from layout coordinates to the screen.
//
// The tables are long runs laid row by row into 2-D textures RUN_WIDTH texels wide
// (GL_MAX_TEXTURE_SIZE caps a row). The width is a power of two so that finding a texel
// is a mask and a shift: integer division is slow on a CPU rasterizer.

uniform sampler2D u_nodes;        // per node one texel: layout x, y (fitted to -1..1), tap index, 0
uniform sampler2D u_activations;  // per node a run of 65 texels: 64 frames, then the selection flag (see selection_flag)
uniform sampler2D u_palette;      // per tap one texel: its colour (linear RGB)

const int RUN_SHIFT = 12;  // twin: RUN_WIDTH = 4096 in renderer.py
const int RUN_MASK = (1 << RUN_SHIFT) - 1;
const int FRAMES = 64;
const int STRIDE = FRAMES + 1;

ivec2 run_texel(int index) {
    return ivec2(index & RUN_MASK, index >> RUN_SHIFT);
}

vec4 node_record(int node) {
    return texelFetch(u_nodes, run_texel(node), 0);
}

// Linear interpolation between the two activation frames around the playhead; the loop wraps.
float activation(int node) {
    float t = u_clock.x;
    float i = floor(t);
    int i0 = int(i) & (FRAMES - 1);
    int base = node * STRIDE;
    float a0 = texelFetch(u_activations, run_texel(base + i0), 0).r;
    float a1 = texelFetch(u_activations, run_texel(base + ((i0 + 1) & (FRAMES - 1))), 0).r;
    return mix(a0, a1, t - i);
}

float selected(int node) {
    return texelFetch(u_activations, run_texel(node * STRIDE + FRAMES), 0).r;
}

// The selection flag: 0 none; deck A's selection 1 (excited) or 2 (kept quiet); deck B's
// 3 (excited) or 5 (quiet); 4 both decks' (excited). Twin: renderer.selection_flags.
bool quiet_flag(float flag) {
    return abs(flag - 2.0) < 0.5 || abs(flag - 5.0) < 0.5;
}

// (in deck A's selection, in deck B's): which halo a selected neuron lights
vec2 halo_decks(float flag) {
    int f = int(flag + 0.5);
    return vec2(f == 1 || f == 2 || f == 4 ? 1.0 : 0.0, f == 3 || f == 4 || f == 5 ? 1.0 : 0.0);
}

vec3 tap_colour(float tap) {
    return texelFetch(u_palette, ivec2(int(tap + 0.5), 0), 0).rgb;
}

// Neurons the performer keeps quiet (selection flag 2) glow frost instead of their tap's hue.
// Twin: palette.QUIET_COLOUR_SRGB, here in linear RGB.
const vec3 QUIET_COLOUR = vec3(0.5705, 0.6383, 0.8276);

vec3 node_colour(int node, float tap) {
    return quiet_flag(selected(node)) ? QUIET_COLOUR : tap_colour(tap);
}

// Twin: palette.activation_glow. 0 up to 1 std above the mean, 1 at 3 std, at most 2.
float glow(float a) {
    return clamp((a - 1.0) / 2.0, 0.0, 2.0);
}

// Layout point -> offset from the screen center in pixels (y up).
vec2 to_pixels(vec2 p) {
    vec2 d = p - u_view.xy;
    return vec2(u_view.z * d.x - u_view.w * d.y, u_view.w * d.x + u_view.z * d.y);
}

vec4 to_clip(vec2 pixels) {
    return vec4(pixels * 2.0 * u_viewport.zw, 0.0, 1.0);
}

const vec4 OUTSIDE = vec4(2.0, 2.0, 2.0, 1.0);  // a vertex here is clipped away: no fragments
