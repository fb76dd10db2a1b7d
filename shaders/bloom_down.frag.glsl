#version 330 core
// Next bloom level down (half the size): a 4x4 box from four bilinear taps.
#include "box4.glsl"

uniform sampler2D u_source;
in vec2 v_uv;
out vec4 f_colour;

void main() {
    f_colour = vec4(box4(u_source, v_uv), 1.0);
}
