#version 330 core
// The light that sits over the scene, at quarter size: the bloom, scaled by its
// intensity, plus the selection's halo, a glowing outline drawn where the distance field
// crosses HALO_EDGE and a faint veil inside it. One small texture for the composite to
// read, instead of two full-size ones.
#include "frame.glsl"

uniform sampler2D u_bloom_level;  // first bloom level (same size as this pass)
uniform sampler2D u_halo_field;   // 1 - distance to the nearest selected neuron / reach (same size)
out vec4 f_colour;

const float HALO_EDGE = 0.35;                    // outline at 65% of the reach from the nearest selected neuron
const vec3 HALO_COLOUR = vec3(1.0, 0.82, 0.55);  // linear twin of palette.HALO_COLOUR_SRGB

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec3 c = vec3(0.0);
    if (u_grade.z > 0.5) {
        c += u_bloom.x * texelFetch(u_bloom_level, p, 0).rgb;
    }
    if (u_grade.w > 0.5) {
        float h = texelFetch(u_halo_field, p, 0).r;
        float ring = (h - HALO_EDGE) / u_halo.w;
        float outer = ring / 4.0;  // a soft glow around the outline, gone where the field ends (h = 0)
        float light = exp(-ring * ring) + 0.25 * exp(-outer * outer) * smoothstep(0.0, HALO_EDGE, h)
                    + 0.01 * smoothstep(HALO_EDGE, HALO_EDGE + 0.25, h);
        c += HALO_COLOUR * u_halo.x * light;
    }
    f_colour = vec4(c, 1.0);
}
