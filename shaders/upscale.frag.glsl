#version 330 core
// render_scale below 1: the finished picture, tone mapped at the smaller size, scaled up
// (bilinear) to fill the view. One 8-bit texture read a pixel, the cheapest full-size pass.
uniform sampler2D u_picture;
in vec2 v_uv;
out vec4 f_colour;

void main() {
    f_colour = vec4(texture(u_picture, v_uv).rgb, 1.0);
}
