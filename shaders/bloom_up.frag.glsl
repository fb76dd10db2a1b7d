#version 330 core
// Bloom level up: a 3x3 tent of the smaller level (four bilinear taps half a texel off
// the diagonals), blended over this level with alpha = scatter (blend SRC_ALPHA,
// ONE_MINUS_SRC_ALPHA): a larger radius lets the wide, low levels show through more,
// and the sum of light stays the same.
#include "frame.glsl"

uniform sampler2D u_source;
in vec2 v_uv;
out vec4 f_colour;

void main() {
    vec2 t = 0.5 / vec2(textureSize(u_source, 0));
    vec3 c = texture(u_source, v_uv + vec2(-t.x, -t.y)).rgb + texture(u_source, v_uv + vec2(t.x, -t.y)).rgb
           + texture(u_source, v_uv + vec2(-t.x, t.y)).rgb + texture(u_source, v_uv + vec2(t.x, t.y)).rgb;
    f_colour = vec4(0.25 * c, u_bloom.y);
}
