#version 330 core
// Black at opacity u_cover over whatever was drawn: the fade of an installation's opening hours.
uniform float u_cover;
out vec4 f_colour;

void main() {
    f_colour = vec4(0.0, 0.0, 0.0, u_cover);
}
